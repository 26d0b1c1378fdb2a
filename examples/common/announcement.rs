//! The announcement both examples share, as plain old data: `#[repr(C)]` with no padding, so
//! its bytes go through the segment as they are (`publish_pod` / `try_recv_pod`).

/// One announcement.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Announcement {
    /// Increases by one per announcement, starting at 1.
    pub id: u64,
    /// Price in millionths of a currency unit.
    pub price_micros: i64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Instrument symbol, ASCII, zero-padded.
    pub symbol: [u8; 8],
}
