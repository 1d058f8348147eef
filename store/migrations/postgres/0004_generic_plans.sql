-- orderlog_append's statements take arrays whose sizes the planner cannot know in advance.
-- Under the default plan_cache_mode (auto) it kept choosing custom plans, so every call
-- planned each statement of the function again — most of the function's CPU time (a profile
-- of 16 concurrent callers found the server CPU-bound in the planner). With generic plans
-- each connection plans the function's statements once; enable_seqscan = off (migration 2)
-- keeps those plans on the indexes as the log grows.
ALTER FUNCTION orderlog_append(BIGINT[], INTEGER[], TEXT[], BIGINT[], TEXT[], INTEGER[], TEXT[], BIGINT[], UUID[],
                               TEXT[], INTEGER[], TEXT[], TEXT[], TEXT[], TIMESTAMPTZ[], TEXT[])
    SET plan_cache_mode = force_generic_plan;
