package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// TestGoldenTail runs shmcast-tail --json on every golden segment written by
// the Rust crate and compares its standard output byte for byte with the
// lines `shmcast tail --json` printed (../../../testdata/golden/README.md).
// A missing manifest is a failure: the files are part of the repository.
//
// The files are copied first: a reader that may park stores to the
// segment's subscriber page, and the committed files must stay as written.
func TestGoldenTail(t *testing.T) {
	src := filepath.Join("..", "..", "..", "testdata", "golden")
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatalf("golden files: %v", err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	checkGoldenTail(t, dir)
}

func checkGoldenTail(t *testing.T, dir string) {
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("golden manifest: %v", err)
	}
	var m struct {
		Segments []struct {
			File      string            `json:"file"`
			Expect    string            `json:"expect"`
			Reads     map[string]string `json:"reads"`
			ReadError *string           `json:"read_error"`
		} `json:"segments"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, seg := range m.Segments {
		// A path with a slash, so the name is never taken for /dev/shm.
		path := filepath.Join(dir, seg.File)
		if !filepath.IsAbs(path) {
			path = "./" + path
		}
		if seg.Expect != "ok" {
			if code, _, _ := runTail(path, "--json", "--timeout", "0"); code != 1 {
				t.Errorf("%s: exit status %d, want 1 (%s)", seg.File, code, seg.Expect)
			}
			continue
		}
		for start, file := range seg.Reads {
			want, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runTail(path, "--json", "--from", start, "--timeout", "0")
			if out != string(want) {
				t.Errorf("%s --from %s: output differs\ngot:\n%s\nwant:\n%s", seg.File, start, out, want)
			}
			// read_error is pinned for reads from the beginning; other starts
			// of such a segment may meet the corruption or not.
			switch {
			case seg.ReadError == nil && code != 0,
				seg.ReadError != nil && start == "beginning" && code != 1,
				code != 0 && code != 1:
				t.Errorf("%s --from %s: exit status %d (read_error %v, stderr %q)", seg.File, start, code, seg.ReadError, errOut)
			}
		}
	}
}

// TestGoldenTailHarness checks checkGoldenTail itself on a golden set made
// with the test writer, while the Rust-written files may be absent.
func TestGoldenTailHarness(t *testing.T) {
	dir := t.TempDir()
	w, unmap, err := segtest.Create(filepath.Join(dir, "two.seg"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	w.Publish([]byte("hi"))
	w.Publish(nil)
	lines := "{\"seq\":1,\"len\":2,\"data\":\"aGk=\"}\n{\"seq\":2,\"len\":0,\"data\":\"\"}\n"
	files := map[string]string{
		"all.jsonl":    lines,
		"newest.jsonl": "{\"seq\":2,\"len\":0,\"data\":\"\"}\n",
		"empty.jsonl":  "",
		"short.seg":    "SHMCAST",
		"manifest.json": `{"layout_version": 1, "segments": [
			{"file": "two.seg", "expect": "ok", "capacity": 4096, "read_error": null,
			 "reads": {"beginning": "all.jsonl", "oldest": "all.jsonl", "newest": "newest.jsonl", "next": "empty.jsonl"}},
			{"file": "short.seg", "expect": "truncated"}]}`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	checkGoldenTail(t, dir)
}
