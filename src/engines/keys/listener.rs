//! A PostgreSQL connection that LISTENs for key changes. It is driven by
//! whoever awaits `next` (the watcher), so it needs no task of its own.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::sql::CHANNEL;
use crate::infra::sql::describe;

/// Bound on connecting and subscribing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keep-alive, so a silently dropped connection is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

pub(super) struct Listener {
    /// Dropping the client would close the connection.
    _client: Client,
    messages: Messages,
}

impl Listener {
    pub async fn connect(url: &str) -> Result<Self, String> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::subscribe(url))
            .await
            .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
    }

    async fn subscribe(url: &str) -> Result<Self, String> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| describe(&e))?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives_idle(KEEPALIVE_IDLE);
        let (client, mut connection) = config.connect(NoTls).await.map_err(|e| describe(&e))?;
        let mut messages: Messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
            connection.poll_message(cx)
        }));
        // The connection must be polled for LISTEN to complete.
        let statement = format!("LISTEN {CHANNEL}");
        let mut listen = Box::pin(client.batch_execute(&statement));
        loop {
            tokio::select! {
                done = &mut listen => {
                    done.map_err(|e| describe(&e))?;
                    break;
                }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(describe(&error)),
                    None => return Err("connection closed".into()),
                },
            }
        }
        drop(listen);
        Ok(Self {
            _client: client,
            messages,
        })
    }

    /// Waits for the next notification; an error when the connection ended.
    pub async fn next(&mut self) -> Result<(), String> {
        loop {
            match self.messages.next().await {
                Some(Ok(AsyncMessage::Notification(_))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(describe(&error)),
                None => return Err("connection closed".into()),
            }
        }
    }
}
