package segtest

import (
	"path/filepath"
	"testing"
)

// Temp creates a segment file of capacity bytes in a temporary directory of
// t, mapped read-write for the test writer and unmapped when t ends, and
// returns the writer and the file's path (for a reader to open).
func Temp(t testing.TB, capacity uint64) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seg")
	w, unmap, err := Create(path, capacity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unmap)
	return w, path
}
