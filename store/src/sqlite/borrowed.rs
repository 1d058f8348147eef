//! A prepared statement that binds its text parameters without copying them.
//!
//! rusqlite binds every text with `SQLITE_TRANSIENT`, so SQLite copies each one into a
//! buffer of its own (a `malloc` and a `memcpy` per text, per row) before the row is built
//! from the copies. A bulk load binds seven texts per event, the payload among them: the
//! copies were a seventh of the import's writing thread (`perf`). Here texts are bound with
//! `SQLITE_STATIC` (SQLite reads them in place) for the duration of one [`BorrowedInsert::run`],
//! which takes the values as borrows, steps once, and unbinds them before it returns, so
//! the statement never holds a pointer past the borrow.

use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;

use rusqlite::{ffi, Connection};

/// One parameter of [`BorrowedInsert::run`].
#[derive(Clone, Copy, Debug)]
pub(super) enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

/// A prepared statement run once per row with borrowed parameters (see the module's doc).
pub(super) struct BorrowedInsert<'c> {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    // The statement must be finalized before its connection closes.
    _conn: PhantomData<&'c Connection>,
}

impl<'c> BorrowedInsert<'c> {
    /// Prepares `sql` (one statement) on `conn`.
    pub(super) fn prepare(conn: &'c Connection, sql: &str) -> Result<BorrowedInsert<'c>, SqliteFailure> {
        let len = c_int::try_from(sql.len()).map_err(|_| SqliteFailure("the statement is too long".into()))?;
        // SAFETY: `conn` is open for 'c, which outlives the statement; `sql` is valid for
        // `len` bytes during the call, and SQLite copies what it keeps.
        unsafe {
            let db = conn.handle();
            let mut stmt = std::ptr::null_mut();
            let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast::<c_char>(), len, &mut stmt, std::ptr::null_mut());
            if rc != ffi::SQLITE_OK || stmt.is_null() {
                return Err(SqliteFailure(message(db, rc)));
            }
            Ok(BorrowedInsert { db, stmt, _conn: PhantomData })
        }
    }

    /// Binds `params` (as ?1, ?2, …) and runs the statement once; the statement takes no
    /// rows back. Every parameter is unbound again before this returns, whatever happened.
    pub(super) fn run(&mut self, params: &[Param<'_>]) -> Result<(), SqliteFailure> {
        // SAFETY: `self.stmt` is a live statement of `self.db`. Texts are bound with
        // SQLITE_STATIC, so SQLite reads them in place: they stay borrowed until this
        // function returns, and `sqlite3_reset` + `sqlite3_clear_bindings` below drop every
        // pointer to them before it does.
        unsafe {
            let mut rc = ffi::SQLITE_OK;
            for (i, param) in params.iter().enumerate() {
                let index = (i + 1) as c_int;
                rc = match *param {
                    Param::Int(value) => ffi::sqlite3_bind_int64(self.stmt, index, value),
                    Param::Text(text) => match c_int::try_from(text.len()) {
                        Ok(len) => ffi::sqlite3_bind_text(
                            self.stmt,
                            index,
                            text.as_ptr().cast::<c_char>(),
                            len,
                            ffi::SQLITE_STATIC(),
                        ),
                        Err(_) => ffi::SQLITE_TOOBIG,
                    },
                };
                if rc != ffi::SQLITE_OK {
                    break;
                }
            }
            let result = if rc == ffi::SQLITE_OK {
                match ffi::sqlite3_step(self.stmt) {
                    ffi::SQLITE_DONE => Ok(()),
                    ffi::SQLITE_ROW => Err(SqliteFailure("the statement returned a row".into())),
                    step => Err(SqliteFailure(message(self.db, step))),
                }
            } else {
                Err(SqliteFailure(message(self.db, rc)))
            };
            ffi::sqlite3_reset(self.stmt);
            ffi::sqlite3_clear_bindings(self.stmt);
            result
        }
    }
}

impl Drop for BorrowedInsert<'_> {
    fn drop(&mut self) {
        // SAFETY: the statement is live and not used after this.
        unsafe {
            ffi::sqlite3_finalize(self.stmt);
        }
    }
}

/// SQLite's message for `rc` on `db`, with the code's name.
/// What SQLite said when a statement failed.
#[derive(Debug)]
pub(super) struct SqliteFailure(String);

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn message(db: *mut ffi::sqlite3, rc: c_int) -> String {
    // SAFETY: `db` is an open connection; both strings are NUL-terminated and owned by
    // SQLite, and copied here before any other call on `db`.
    unsafe {
        let detail = CStr::from_ptr(ffi::sqlite3_errmsg(db)).to_string_lossy().into_owned();
        let code = CStr::from_ptr(ffi::sqlite3_errstr(rc)).to_string_lossy();
        if detail == code {
            detail
        } else {
            format!("{detail} ({code})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INTEGER)").unwrap();
        conn
    }

    #[test]
    fn rows_hold_the_values_after_their_buffers_are_gone() {
        let conn = table();
        let mut insert = BorrowedInsert::prepare(&conn, "INSERT INTO t (id, name, n) VALUES (?1, ?2, ?3)").unwrap();
        for i in 0..100i64 {
            // A fresh buffer each row, overwritten and freed after the run.
            let mut name = format!("name-{i}-{}", "x".repeat(i as usize));
            insert.run(&[Param::Int(i), Param::Text(&name), Param::Int(i * 7)]).unwrap();
            name.clear();
            name.push_str("overwritten");
        }
        drop(insert);
        let rows: Vec<(i64, String, i64)> = conn
            .prepare("SELECT id, name, n FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 100);
        for (i, (id, name, n)) in rows.into_iter().enumerate() {
            let i = i as i64;
            assert_eq!((id, n), (i, i * 7));
            assert_eq!(name, format!("name-{i}-{}", "x".repeat(i as usize)));
        }
    }

    #[test]
    fn a_failing_row_names_the_problem_and_the_next_row_still_goes_in() {
        let conn = table();
        let mut insert = BorrowedInsert::prepare(&conn, "INSERT INTO t (id, name, n) VALUES (?1, ?2, ?3)").unwrap();
        insert.run(&[Param::Int(1), Param::Text("a"), Param::Int(1)]).unwrap();
        let err = insert.run(&[Param::Int(2), Param::Text("a"), Param::Int(2)]).unwrap_err();
        assert!(err.to_string().contains("UNIQUE constraint failed: t.name"), "{err}");
        // Nothing stays bound from a failed run: ?3 unbound is NULL.
        insert.run(&[Param::Int(3), Param::Text("c")]).unwrap();
        let n: Option<i64> = conn.query_row("SELECT n FROM t WHERE id = 3", [], |r| r.get(0)).unwrap();
        assert_eq!(n, None);
        let count: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 2);
    }

    #[test]
    fn a_bad_statement_is_refused_with_sqlites_message() {
        let conn = table();
        let err = BorrowedInsert::prepare(&conn, "INSERT INTO missing VALUES (?1)").err().unwrap();
        assert!(err.to_string().contains("no such table: missing"), "{err}");
    }
}
