//! Property-based fuzzing of the agent message path's pure part: any bytes
//! arriving as an `AgentMessage` either fail to decode or decode into a
//! message every check and conversion the session applies takes without
//! panicking (registration checks, limits, log records, line cutting,
//! outcomes, usage, capacity). The live counterpart, sequences of
//! well-formed messages against a real host, is `tests/agent_fuzz.rs`.
//!
//! Cases: `PROPTEST_CASES` (CI runs the default 256 per property; a longer
//! run: `PROPTEST_CASES=1000000 cargo test -p hodei --lib decode_fuzz`).

use hodei_proto::v1::{AgentMessage, agent_message::Msg};
use proptest::prelude::*;
use prost::Message;

use super::super::limits::AgentLimits;
use super::super::wire;
use super::validate;

fn exercise(message: AgentMessage) {
    let limits = AgentLimits::default();
    match message.msg {
        Some(Msg::Register(register)) => {
            let _ = validate(&register, &limits);
            let _ = wire::capacity(&register);
        }
        Some(Msg::Heartbeat(heartbeat)) => {
            for usage in heartbeat.jobs {
                let _ = wire::job_usage(usage);
            }
        }
        Some(Msg::LogBatch(batch)) => {
            for entry in batch.entries {
                let mut record = wire::log_record(entry);
                let _ = limits.cut_line(&mut record.data);
            }
        }
        Some(Msg::JobResult(result)) => {
            let _ = wire::outcome(&result);
        }
        Some(Msg::JobStarted(_)) | None => {}
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decode_path(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(message) = AgentMessage::decode(bytes.as_slice()) {
            exercise(message);
        }
    }

    #[test]
    fn mutated_real_messages_never_panic_the_decode_path(
        which in 0usize..3,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        // Start from well-formed messages so mutations reach deep fields.
        let seeds = [
            AgentMessage { msg: Some(Msg::Register(hodei_proto::v1::Register {
                agent_id: "a".into(), protocol_version: hodei_proto::PROTOCOL_VERSION,
                slots: 4, agent_secret: "s".repeat(32), ..Default::default()
            })) },
            AgentMessage { msg: Some(Msg::LogBatch(hodei_proto::v1::LogBatch {
                job_id: "j".into(), attempt: 1,
                entries: vec![hodei_proto::v1::LogEntry { sequence: 1, data: b"line".to_vec(), ..Default::default() }],
            })) },
            AgentMessage { msg: Some(Msg::JobResult(hodei_proto::v1::JobResult {
                job_id: "j".into(), attempt: 1, exit_code: 3, ..Default::default()
            })) },
        ];
        let mut bytes = seeds[which].encode_to_vec();
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        if let Ok(message) = AgentMessage::decode(bytes.as_slice()) {
            exercise(message);
        }
    }
}
