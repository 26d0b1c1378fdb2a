package shmcast

import (
	"context"
	"iter"
)

// Messages returns a sequence of the messages read from r, blocking between
// them like Read, for use with range:
//
//	for m, err := range r.Messages(ctx) {
//		var lag *shmcast.LaggedError
//		if errors.As(err, &lag) {
//			continue // lag.Missed messages were lost; reading goes on
//		}
//		if err != nil {
//			return err // ctx done, r closed, or a corrupt segment
//		}
//		use(m.Seq, m.Data)
//	}
//	// The producer has exited and every message it published was read.
//
// The sequence ends, without an error, when the producer has exited (or
// was killed) and everything it published has been delivered: that is the
// normal end of a stream. A lap is yielded as (Message{}, *LaggedError) and
// the sequence goes on, and so is the eviction of a registered Reader
// ([ErrEvicted]; the Reader reads on as a lossy reader). Any other error (ctx.Err(), [os.ErrClosed], a
// [*CorruptError]) is yielded once and ends it. To learn after the loop
// whether the producer exited, and whether a new producer has since
// replaced its segment, read once more: a blocking read of r then returns
// the [*ProducerGoneError] at once (see its Replaced field). m.Data aliases
// a buffer owned by the sequence and is overwritten by the next message:
// copy it to keep it.
//
// The sequence is single-use: it consumes messages from r, and ranging over
// it a second time yields only an error. Call Messages again for a new one
// (which continues from r's position).
func (r *Reader) Messages(ctx context.Context) iter.Seq2[Message, error] {
	used := false
	return func(yield func(Message, error) bool) {
		if used {
			yield(Message{}, errIterReused)
			return
		}
		used = true
		buf := make([]byte, min(r.MaxPayload(), 64<<10))
		for {
			m, err := r.Read(ctx, buf)
			switch e := err.(type) {
			case nil:
				if !yield(m, nil) {
					return
				}
			case *ShortBufferError:
				buf = make([]byte, e.Need)
			case *LaggedError:
				if !yield(Message{}, err) {
					return
				}
			case *ProducerGoneError:
				return // the end of the stream: everything published was read
			default:
				if !yield(Message{}, err) || err != ErrEvicted {
					return
				}
			}
		}
	}
}
