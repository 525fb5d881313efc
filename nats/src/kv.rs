//! The stream behind a key-value bucket, in one place for every bucket the
//! platform keeps (`ptp_quarantine`, `ptp_masters`).
//!
//! Buckets are created as plain streams with only settings nats-server 2.9
//! understands (async-nats's own bucket creation sends newer ones that 2.9
//! answers in a shape the client cannot read), in the shape the key-value
//! layer expects: one message per key, rollups allowed, deletes through
//! markers, direct gets, file storage. Callers set what differs (age,
//! replicas) with struct update syntax.

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

/// The stream `KV_<bucket>` for the bucket `bucket`, values up to
/// `max_message_size` bytes, one replica, kept forever.
pub fn bucket_stream(bucket: &str, description: &str, max_message_size: i32) -> Config {
    Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_string()),
        subjects: vec![format!("$KV.{bucket}.>")],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_messages_per_subject: 1,
        max_message_size,
        discard: DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_stream_is_what_the_key_value_layer_reads() {
        let c = bucket_stream("b", "d", 10);
        assert_eq!(c.name, "KV_b");
        assert_eq!(c.subjects, vec!["$KV.b.>".to_string()]);
        assert_eq!(c.max_messages_per_subject, 1);
        assert!(c.allow_rollup && c.deny_delete && c.allow_direct);
    }
}
