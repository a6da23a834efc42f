//! How jobs reach workers. The database holds every job's state; the queue
//! only says "job X is waiting".
//!
//! - Embedded: the API process's own worker pool, woken by a notification
//!   (and every few seconds, so nothing waits forever).
//! - RabbitMQ: a durable queue of job ids, persistent messages, publisher
//!   confirms. A worker acknowledges a message only after the job's outcome
//!   is recorded, so a worker killed mid-job leaves its message to be
//!   redelivered to another one, which takes the job over.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Notify;

/// RabbitMQ queue of our job ids.
pub const JOB_QUEUE: &str = "bundlegen-jobs";

#[derive(Debug, thiserror::Error)]
#[error("job queue {url}: {message}")]
pub struct QueueError {
    pub url: String,
    pub message: String,
}

#[derive(Clone)]
pub enum Queue {
    Local(Arc<Notify>),
    Amqp(Arc<Amqp>),
}

pub struct Amqp {
    pub url: String,
    pub connection: Connection,
    publisher: Channel,
}

/// Connects to a broker and opens a channel with publisher confirms.
pub async fn amqp_connect(url: &str) -> Result<(Connection, Channel), QueueError> {
    let error = |e: lapin::Error| QueueError {
        url: crate::redact(url),
        message: e.to_string(),
    };
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(error)?;
    let channel = connection.create_channel().await.map_err(error)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(error)?;
    Ok((connection, channel))
}

/// Declares a durable queue.
pub async fn declare(channel: &Channel, url: &str, queue: &str) -> Result<(), QueueError> {
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
        .await
        .map(drop)
        .map_err(|e| QueueError {
            url: crate::redact(url),
            message: format!("declaring {queue}: {e}"),
        })
}

/// Publishes a persistent message and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    url: &str,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), QueueError> {
    let error = |e: lapin::Error| QueueError {
        url: crate::redact(url),
        message: format!("publishing to {queue}: {e}"),
    };
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            properties.with_delivery_mode(2),
        )
        .await
        .map_err(error)?
        .await
        .map_err(error)?;
    if confirm.is_nack() {
        return Err(QueueError {
            url: crate::redact(url),
            message: format!("the broker refused a message for {queue}"),
        });
    }
    Ok(())
}

impl Queue {
    /// `amqp://...` connects to RabbitMQ; `None` is the embedded queue.
    pub async fn open(url: Option<&str>) -> Result<Queue, QueueError> {
        let Some(url) = url else {
            return Ok(Queue::Local(Arc::new(Notify::new())));
        };
        let (connection, publisher) = amqp_connect(url).await?;
        declare(&publisher, url, JOB_QUEUE).await?;
        Ok(Queue::Amqp(Arc::new(Amqp {
            url: url.to_string(),
            connection,
            publisher,
        })))
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Queue::Local(_))
    }

    /// Tells the workers a job waits.
    pub async fn announce(&self, job_id: &str) -> Result<(), QueueError> {
        match self {
            Queue::Local(notify) => {
                notify.notify_waiters();
                Ok(())
            }
            Queue::Amqp(amqp) => {
                publish(
                    &amqp.publisher,
                    &amqp.url,
                    JOB_QUEUE,
                    job_id.as_bytes(),
                    BasicProperties::default(),
                )
                .await
            }
        }
    }

    /// Waits until a job may be waiting (embedded queue).
    pub async fn wait_local(&self) {
        if let Queue::Local(notify) = self {
            let _ = tokio::time::timeout(Duration::from_secs(5), notify.notified()).await;
        }
    }
}

/// A delivered job id, to acknowledge once its outcome is recorded.
pub struct JobMessage {
    pub job_id: String,
    /// Delivered before to a consumer that did not acknowledge it (its
    /// worker died): the job may be taken over.
    pub redelivered: bool,
    delivery: lapin::message::Delivery,
}

impl JobMessage {
    pub async fn ack(self) {
        if let Err(e) = self.delivery.ack(BasicAckOptions::default()).await {
            tracing::warn!("acknowledging job {}: {e}", self.job_id);
        }
    }

    /// Hands the message back to the queue for another attempt.
    pub async fn requeue(self) {
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        if let Err(e) = self.delivery.nack(options).await {
            tracing::warn!("requeueing job {}: {e}", self.job_id);
        }
    }
}

/// Consumes the durable `queue` on a channel of its own, at most `prefetch`
/// messages unacknowledged at a time; `tag` names this consumer.
pub async fn consume(
    connection: &Connection,
    url: &str,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> Result<lapin::Consumer, QueueError> {
    let error = |e: lapin::Error| QueueError {
        url: crate::redact(url),
        message: format!("consuming {queue}: {e}"),
    };
    let channel = connection.create_channel().await.map_err(error)?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(error)?;
    declare(&channel, url, queue).await?;
    let tag = format!("{tag}-{}", std::process::id());
    channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(error)
}

/// Consumes job ids, at most `prefetch` unacknowledged at a time.
pub async fn consume_jobs(
    amqp: &Amqp,
    prefetch: u16,
) -> Result<impl futures_util::Stream<Item = JobMessage> + use<>, QueueError> {
    let consumer = consume(&amqp.connection, &amqp.url, JOB_QUEUE, "bundlegen-worker", prefetch).await?;
    Ok(consumer.filter_map(|delivery| async move {
        let delivery = delivery.ok()?;
        Some(JobMessage {
            job_id: String::from_utf8_lossy(&delivery.data).into_owned(),
            redelivered: delivery.redelivered,
            delivery,
        })
    }))
}
