//! Waking readers: this process's through a watch channel, other processes' through
//! NOTIFY, and a LISTEN connection that wakes this process's readers for theirs.

use super::*;

/// Least pause between two NOTIFYs this process sends.
pub const NOTIFY_INTERVAL_MS: u64 = 50;

impl PostgresStore {
    /// Wakes waiting readers: this process's at once, other processes' through a NOTIFY
    /// sent outside the append (a NOTIFY inside it would serialize every commit on the
    /// server's notification queue lock), at most every `NOTIFY_INTERVAL_MS`.
    pub(super) fn announce(&self) {
        self.notified.send_modify(|n| *n += 1);
        self.notify_request.notify_one();
        if self.notifier_started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let pool = self.pool.clone();
        let request = Arc::clone(&self.notify_request);
        let task = tokio::spawn(async move {
            loop {
                request.notified().await;
                if let Ok(client) = pool.get().await {
                    if let Err(e) = client.batch_execute(&format!("NOTIFY {NOTIFY_CHANNEL}")).await {
                        tracing::warn!(error = %describe(&e), "NOTIFY failed; other processes' readers poll");
                    }
                }
                tokio::time::sleep(Duration::from_millis(NOTIFY_INTERVAL_MS)).await;
            }
        });
        self.tasks.lock().expect("task lock").push(task);
    }

    /// Starts the LISTEN connection once; without it, waiting readers poll.
    pub(super) async fn ensure_listener(&self) {
        self.listener
            .get_or_init(|| async {
                match tokio_postgres::connect(&options_string(&self.options), NoTls).await {
                    Ok((client, mut connection)) => {
                        let notified = self.notified.clone();
                        let task = tokio::spawn(async move {
                            let listen_sql = format!("LISTEN {NOTIFY_CHANNEL}");
                            let listen = client.batch_execute(&listen_sql);
                            let mut listen = std::pin::pin!(listen);
                            let mut listening = false;
                            loop {
                                let message = std::future::poll_fn(|cx| {
                                    if !listening {
                                        if let std::task::Poll::Ready(r) = listen.as_mut().poll(cx) {
                                            listening = true;
                                            if let Err(e) = r {
                                                tracing::warn!(error = %e, "LISTEN failed; waiting readers poll");
                                            }
                                        }
                                    }
                                    connection.poll_message(cx)
                                })
                                .await;
                                match message {
                                    Some(Ok(AsyncMessage::Notification(_))) => notified.send_modify(|n| *n += 1),
                                    Some(Ok(_)) => {}
                                    Some(Err(e)) => {
                                        tracing::warn!(error = %e, "LISTEN connection lost; waiting readers poll");
                                        break;
                                    }
                                    None => break,
                                }
                            }
                        });
                        self.tasks.lock().expect("task lock").push(task);
                    }
                    Err(e) => tracing::warn!(error = %describe(&e), "cannot LISTEN; waiting readers poll"),
                }
            })
            .await;
    }
}
