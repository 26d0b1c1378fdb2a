package shmcast

// WithReadOnly opens the segment read-only even where it is writable, as a
// reader without write access would: it cannot park. For the external
// tests; tests run as root, which file modes do not stop.
var WithReadOnly = withReadOnly
