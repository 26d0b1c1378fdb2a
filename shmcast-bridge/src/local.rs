//! The importer's local segment: messages go in with their source sequence numbers, losses as
//! gaps that local readers get as `Lagged` (docs/BRIDGE.md, "Local readers").

use shmcast::{Publisher, PublisherOptions};

use crate::log;

/// The local segment of the current source incarnation.
pub struct LocalSegment {
    name: String,
    capacity: u64,
    /// `None` only while it is being replaced.
    publisher: Option<Publisher>,
}

/// What became of a message handed to [`LocalSegment::deliver`].
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Published.
    Yes,
    /// Larger than the local segment's largest payload: recorded as a gap of 1.
    Oversize,
}

impl LocalSegment {
    /// Creates the segment `name` (replacing one whose producer is dead).
    pub fn create(name: &str, capacity: u64) -> Result<Self, String> {
        Ok(LocalSegment {
            name: name.to_owned(),
            capacity,
            publisher: Some(Self::publisher(name, capacity)?),
        })
    }

    fn publisher(name: &str, capacity: u64) -> Result<Publisher, String> {
        // Gap records: local readers get each loss as `Lagged`, and local sequence numbers are
        // the source's (readers that predate gap records refuse the segment instead).
        PublisherOptions::new()
            .capacity(capacity)
            .gap_records(true)
            .create(name)
            .map_err(|e| format!("cannot create segment {name:?}: {e}"))
    }

    fn live(&mut self) -> Result<&mut Publisher, String> {
        self.publisher
            .as_mut()
            .ok_or_else(|| format!("segment {:?} could not be created again", self.name))
    }

    /// A new source incarnation: its sequence numbers restart at 1, and local ones cannot go
    /// back, so the segment is replaced by a new one. Its readers get `ProducerGone { replaced:
    /// true }` after the old incarnation's last message, as readers of the source segment do
    /// when its producer is replaced.
    pub fn restart(&mut self) -> Result<(), String> {
        // The old publisher goes first (its drop removes the name), then the new one takes it.
        drop(self.publisher.take());
        self.publisher = Some(Self::publisher(&self.name, self.capacity)?);
        log!(
            "new source incarnation: segment {:?} created again",
            self.name
        );
        Ok(())
    }

    /// Records that the next `missed` source sequence numbers are lost: the one place where
    /// the importer tells local readers about a loss.
    pub fn gap(&mut self, missed: u64) -> Result<(), String> {
        let name = self.name.clone();
        self.live()?
            .publish_gap(missed)
            .map_err(|e| format!("cannot record a gap in segment {name:?}: {e}"))
    }

    /// Publishes the message of source sequence number `seq`, which must be the segment's next
    /// sequence number (the gaps before it recorded).
    pub fn deliver(&mut self, seq: u64, payload: &[u8]) -> Result<Delivered, String> {
        let name = self.name.clone();
        let publisher = self.live()?;
        if publisher.next_seq() != seq {
            return Err(format!(
                "segment {name:?} is at sequence number {} but the next source message is {seq} (a bug in the importer's accounting)",
                publisher.next_seq()
            ));
        }
        if payload.len() > publisher.max_payload() {
            self.gap(1)?;
            return Ok(Delivered::Oversize);
        }
        publisher
            .publish(payload)
            .map_err(|e| format!("cannot publish into segment {name:?}: {e}"))?;
        Ok(Delivered::Yes)
    }
}
