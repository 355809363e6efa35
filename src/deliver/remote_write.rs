//! placeholder
use super::sink::{BadRow, Request, Sink};
use crate::config::SinkConfig;
use crate::queue::Row;
#[derive(Default)]
pub struct RemoteWrite;
impl Sink for RemoteWrite {
    fn encode(&mut self, _rows: &[Row], _config: &SinkConfig) -> Result<Request, BadRow> {
        Err(BadRow { index: 0, reason: "todo".into() })
    }
}
