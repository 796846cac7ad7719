//! Log batches that are already waiting are stored together.
//!
//! Every append is one durable store commit (an fsync), so storing an
//! agent's batches one by one caps a chatty job at one 64 KiB batch per
//! fsync. While a commit runs, the agent keeps sending (the HTTP/2 window
//! lets several batches be in flight); whatever has arrived meanwhile for
//! the same job and attempt joins the next append, up to
//! [`MAX_COALESCED_BYTES`]. Nothing waits for more to come: an idle agent's
//! single line is stored at once.

use futures::FutureExt;
use hodei_proto::v1::{AgentMessage, LogBatch, agent_message};
use tonic::{Status, Streaming};

/// Most log data one append takes from coalesced batches.
pub const MAX_COALESCED_BYTES: usize = 8 * 1024 * 1024;

/// A message read from the agent's stream.
pub type Received = Result<Option<AgentMessage>, Status>;

/// Appends to `batch` the entries of the batches for the same job and
/// attempt that have already been received. Returns the first message
/// that could not join, to be handled next (in order).
pub fn take_ready(batch: &mut LogBatch, inbound: &mut Streaming<AgentMessage>) -> Option<Received> {
    let mut bytes: usize = batch.entries.iter().map(|e| e.data.len()).sum();
    while bytes < MAX_COALESCED_BYTES {
        // `message()` is cancel-safe: a message not ready yet stays in the
        // stream for the next read.
        let next = inbound.message().now_or_never()?;
        match next {
            Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::LogBatch(more)),
            })) if more.job_id == batch.job_id && more.attempt == batch.attempt => {
                bytes += more.entries.iter().map(|e| e.data.len()).sum::<usize>();
                batch.entries.extend(more.entries);
            }
            other => return Some(other),
        }
    }
    None
}
