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
//			return err // ctx done, closed, or corrupt segment
//		}
//		use(m.Seq, m.Data)
//	}
//
// A lap is yielded as (Message{}, *LaggedError) and the sequence goes on; any
// other error is yielded once and ends it. m.Data aliases a buffer owned by
// the sequence and is overwritten by the next message: copy it to keep it.
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
			default:
				yield(Message{}, err)
				return
			}
		}
	}
}
