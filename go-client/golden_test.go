package shmcast_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// The golden segment files are written by the Rust crate (cargo test --test
// golden) under ../testdata/golden; see its README.md. A missing manifest is
// a failure, not a skip: the files are part of the repository.
const goldenDir = "../testdata/golden"

type goldenManifest struct {
	LayoutVersion int             `json:"layout_version"`
	Segments      []goldenSegment `json:"segments"`
}

type goldenSegment struct {
	File      string            `json:"file"`
	Expect    string            `json:"expect"`
	Capacity  uint64            `json:"capacity"`
	Reads     map[string]string `json:"reads"`
	ReadError *string           `json:"read_error"`
}

// goldenKinds maps the manifest's snake_case error kinds to the sentinels.
var goldenKinds = map[string]error{
	"truncated":           shmcast.ErrTruncated,
	"not_initialized":     shmcast.ErrNotInitialized,
	"bad_magic":           shmcast.ErrBadMagic,
	"unsupported_version": shmcast.ErrUnsupportedVersion,
	"unsupported_flags":   shmcast.ErrUnsupportedFlags,
	"invalid_header":      shmcast.ErrInvalidHeader,
	"size_mismatch":       shmcast.ErrSizeMismatch,
	"corrupt":             shmcast.ErrCorrupt,
}

func loadGoldenManifest(t *testing.T, dir string) goldenManifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("golden manifest: %v (the Rust crate writes it: SHMCAST_REGEN_GOLDEN=1 cargo test --test golden)", err)
	}
	var m goldenManifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("golden manifest: %v", err)
	}
	if m.LayoutVersion != shmcast.LayoutVersion {
		t.Fatalf("golden manifest is for layout %d, this reader reads %d", m.LayoutVersion, shmcast.LayoutVersion)
	}
	if len(m.Segments) == 0 {
		t.Fatal("golden manifest lists no segments")
	}
	return m
}

// jsonLine formats a message as `shmcast tail --json` does.
func jsonLine(m shmcast.Message) string {
	return `{"seq":` + strconv.FormatUint(m.Seq, 10) + `,"len":` + strconv.Itoa(len(m.Data)) +
		`,"data":"` + base64.StdEncoding.EncodeToString(m.Data) + "\"}\n"
}

// readGolden reads the segment from start until no message is left and
// returns the --json lines and the error that ended the read, if any.
func readGolden(path string, start shmcast.Start) (string, error) {
	r, err := shmcast.OpenPath(path, shmcast.WithStart(start))
	if err != nil {
		return "", err
	}
	defer r.Close()
	var out strings.Builder
	buf := make([]byte, r.MaxPayload())
	for range 1 << 20 {
		m, err := r.TryRead(buf)
		var lag *shmcast.LaggedError
		switch {
		case err == nil:
			out.WriteString(jsonLine(m))
		case errors.As(err, &lag):
			fmt.Fprintf(&out, "{\"lagged\":%d}\n", lag.Missed)
		case err == shmcast.ErrNoMessage:
			return out.String(), nil
		default:
			return out.String(), err
		}
	}
	return out.String(), errors.New("read did not end")
}

func TestGolden(t *testing.T) { checkGolden(t, goldenDir) }

func checkGolden(t *testing.T, dir string) {
	m := loadGoldenManifest(t, dir)
	for _, seg := range m.Segments {
		t.Run(seg.File, func(t *testing.T) {
			path := filepath.Join(dir, seg.File)
			if seg.Expect != "ok" {
				kind, known := goldenKinds[seg.Expect]
				if !known {
					t.Fatalf("unknown expected error kind %q", seg.Expect)
				}
				r, err := shmcast.OpenPath(path)
				if err == nil {
					r.Close()
				}
				var he *shmcast.HeaderError
				if !errors.Is(err, kind) || !errors.As(err, &he) {
					t.Fatalf("opening: got %v, want %s", err, seg.Expect)
				}
				return
			}
			r, err := shmcast.OpenPath(path)
			if err != nil && (seg.ReadError == nil || !errors.Is(err, goldenKinds[*seg.ReadError])) {
				t.Fatalf("opening: %v", err)
			}
			if err == nil {
				if got := r.Header().Capacity; seg.Capacity != 0 && got != seg.Capacity {
					t.Errorf("capacity %d, manifest says %d", got, seg.Capacity)
				}
				r.Close()
			}
			if len(seg.Reads) == 0 {
				t.Fatal("no reads listed for an ok segment")
			}
			for name, file := range seg.Reads {
				start, err := shmcast.ParseStart(name)
				if err != nil {
					t.Fatalf("reads: %v", err)
				}
				want, err := os.ReadFile(filepath.Join(dir, file))
				if err != nil {
					t.Fatal(err)
				}
				got, err := readGolden(path, start)
				if got != string(want) {
					t.Errorf("from %s: lines differ\ngot:\n%s\nwant (%s):\n%s", name, got, file, want)
				}
				switch {
				case err == nil && seg.ReadError != nil && start == shmcast.Beginning:
					t.Errorf("from %s: read ended cleanly, want %s", name, *seg.ReadError)
				case err != nil && seg.ReadError == nil:
					t.Errorf("from %s: %v", name, err)
				case err != nil && !errors.Is(err, goldenKinds[*seg.ReadError]):
					t.Errorf("from %s: got %v, want %s", name, err, *seg.ReadError)
				}
			}
		})
	}
}

// TestGoldenHarness runs checkGolden on a small golden set made here with
// the test writer, with expectations computed from what was published (not
// by the reader), so the harness itself is tested while the Rust-written
// files are absent.
func TestGoldenHarness(t *testing.T) {
	dir := t.TempDir()
	w, unmap, err := segtest.Create(filepath.Join(dir, "three.seg"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	var all []string
	for _, n := range []int{0, 5, 100} {
		seq, _ := w.PublishPattern(n)
		all = append(all, jsonLine(shmcast.Message{Seq: seq, Data: segtest.Pattern(seq, n)}))
	}
	files := map[string]string{
		"three.beginning.jsonl": strings.Join(all, ""),
		"three.oldest.jsonl":    strings.Join(all, ""),
		"three.newest.jsonl":    all[2],
		"three.next.jsonl":      "",
		"bad_magic.seg":         "NOTMAGIC" + strings.Repeat("\x00", 4096+8192-8),
		"manifest.json": `{"layout_version": 1, "segments": [
			{"file": "three.seg", "expect": "ok", "capacity": 4096, "read_error": null,
			 "reads": {"beginning": "three.beginning.jsonl", "oldest": "three.oldest.jsonl",
			           "newest": "three.newest.jsonl", "next": "three.next.jsonl"}},
			{"file": "bad_magic.seg", "expect": "bad_magic"}]}`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	checkGolden(t, dir)
}

// The hostile segments the Rust fuzzer keeps in ../testdata/hostile (hand-made
// attacks and cases it found) must give the Go reader typed errors or
// messages, and every read loop must end: the same property as
// tests/hostile.rs, on the same bytes.
func TestHostileCorpusFromRust(t *testing.T) {
	files, err := filepath.Glob("../testdata/hostile/*.seg")
	if err != nil || len(files) == 0 {
		t.Fatalf("no hostile corpus (%v)", err)
	}
	for _, path := range files {
		for _, start := range []shmcast.Start{shmcast.Beginning, shmcast.Oldest, shmcast.Newest, shmcast.Next} {
			_, err := readGolden(path, start)
			var hdr *shmcast.HeaderError
			if err != nil && !errors.Is(err, shmcast.ErrCorrupt) && !errors.As(err, &hdr) {
				t.Errorf("%s from %v: %v", filepath.Base(path), start, err)
			}
		}
	}
	// Positions from the header of 2^63 or more are corrupt (docs/LAYOUT.md).
	_, err = readGolden("../testdata/hostile/head_at_u64_max.seg", shmcast.Oldest)
	if !errors.Is(err, shmcast.ErrCorrupt) {
		t.Errorf("head at 2^64-8: %v, want ErrCorrupt", err)
	}
}

// TestHostileCorpusReads reads every file of ../testdata/hostile from every
// start and compares what this reader delivers, and how its stream ends,
// with reads.json, which the Rust reader wrote (tests/hostile.rs,
// hostile_corpus_reads_as_recorded): the same messages, losses and end, byte
// for byte. The files have no producer, so a blocking read ends each stream
// once nothing is left (after one LivenessInterval): the files are read in
// parallel.
func TestHostileCorpusReads(t *testing.T) {
	data, err := os.ReadFile("../testdata/hostile/reads.json")
	if err != nil {
		t.Fatalf("recorded reads: %v (the Rust crate writes them: SHMCAST_REGEN_HOSTILE=1 cargo test --test hostile)", err)
	}
	var want map[string]map[string][]string
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../testdata/hostile/*.seg")
	if err != nil || len(files) != len(want) {
		t.Fatalf("%d corpus files, %d recorded (%v)", len(files), len(want), err)
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A copy: a reader with write access may store into the
			// subscriber area.
			bytes, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			copyPath := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(copyPath, bytes, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, start := range []shmcast.Start{shmcast.Beginning, shmcast.Oldest, shmcast.Newest, shmcast.Next} {
				got := hostileTranscript(t, copyPath, start)
				if w := want[name][start.String()]; strings.Join(got, "\n") != strings.Join(w, "\n") {
					t.Errorf("from %v:\n got %q\nwant %q", start, got, w)
				}
			}
		})
	}
}

// hostileTranscript is tests/hostile.rs's transcript: one line per message
// ("msg SEQ LEN FNV1A64"), per loss ("lagged N"), and how the stream ended
// ("end producer_gone", "end corrupt", or "open KIND" when opening failed).
func hostileTranscript(t *testing.T, path string, start shmcast.Start) []string {
	r, err := shmcast.OpenPath(path, shmcast.WithStart(start))
	if err != nil {
		return []string{"open " + hostileOpenKind(t, err)}
	}
	defer r.Close()
	var lines []string
	buf := make([]byte, 0, 64)
	for range 100_000 {
		m, err := r.TryRead(buf[:cap(buf)])
		if err == shmcast.ErrNoMessage {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			m, err = r.Read(ctx, buf[:cap(buf)])
			cancel()
		}
		var short *shmcast.ShortBufferError
		var lag *shmcast.LaggedError
		switch {
		case err == nil:
			h := fnv.New64a()
			h.Write(m.Data)
			lines = append(lines, fmt.Sprintf("msg %d %d %016x", m.Seq, len(m.Data), h.Sum64()))
		case errors.As(err, &short):
			buf = make([]byte, 0, short.Need)
		case errors.As(err, &lag):
			lines = append(lines, fmt.Sprintf("lagged %d", lag.Missed))
		case errors.Is(err, shmcast.ErrProducerGone):
			return append(lines, "end producer_gone")
		case errors.Is(err, shmcast.ErrCorrupt):
			return append(lines, "end corrupt")
		default:
			t.Fatalf("unexpected end of a read: %v", err)
		}
	}
	return append(lines, "end did_not_end")
}

// hostileOpenKind names an error from opening a corpus file as the
// transcripts do: the header kinds of the golden manifest, and join_corrupt
// when the index words are inconsistent (Rust: Error::InvalidHeader with the
// ring's reason).
func hostileOpenKind(t *testing.T, err error) string {
	if errors.Is(err, shmcast.ErrCorrupt) {
		return "join_corrupt"
	}
	for kind, sentinel := range goldenKinds {
		if errors.Is(err, sentinel) {
			return kind
		}
	}
	t.Fatalf("unexpected error opening a corpus file: %v", err)
	return ""
}
