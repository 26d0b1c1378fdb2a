package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Header names of the bridge's wire format (docs/BRIDGE.md, "Wire format").
const (
	headerStream    = "Shmcast-Stream"
	headerSeq       = "Shmcast-Seq"
	headerLost      = "Shmcast-Lost"
	headerHeartbeat = "Shmcast-Heartbeat"
)

// Frame is what one bridge message says about the source's sequence numbers.
type Frame struct {
	// Stream identifies the source incarnation (host, segment creation time,
	// producer PID).
	Stream string
	// Seq is a data message's sequence number, or for a heartbeat the last
	// sequence number the exporter sent or counted as lost.
	Seq uint64
	// Lost counts the sequence numbers the exporter did not send: just
	// before Seq (data), or ending at Seq (heartbeat).
	Lost uint64
	// Heartbeat is set on heartbeats, which carry no payload.
	Heartbeat bool
}

// ErrNotAFrame is wrapped by ParseFrame's errors: the message did not come
// from a shmcast-bridge exporter.
var ErrNotAFrame = errors.New("not a shmcast-bridge message")

// ParseFrame reads a Frame from a message's headers.
func ParseFrame(h nats.Header) (Frame, error) {
	var f Frame
	f.Stream = h.Get(headerStream)
	if f.Stream == "" {
		return f, fmt.Errorf("%w: no %s header", ErrNotAFrame, headerStream)
	}
	seq, err := strconv.ParseUint(h.Get(headerSeq), 10, 64)
	if err != nil {
		return f, fmt.Errorf("%w: %s: %v", ErrNotAFrame, headerSeq, err)
	}
	f.Seq = seq
	if v := h.Get(headerLost); v != "" {
		if f.Lost, err = strconv.ParseUint(v, 10, 64); err != nil {
			return f, fmt.Errorf("%w: %s: %v", ErrNotAFrame, headerLost, err)
		}
	}
	f.Heartbeat = h.Get(headerHeartbeat) != ""
	if !f.Heartbeat && f.Seq == 0 {
		return f, fmt.Errorf("%w: %s is 0", ErrNotAFrame, headerSeq)
	}
	if f.Lost > f.Seq {
		return f, fmt.Errorf("%w: %s is larger than %s", ErrNotAFrame, headerLost, headerSeq)
	}
	return f, nil
}
