#include "textflag.h"

// func loadFence()
//
// DMB ISHLD: every load issued before the barrier is complete before any
// load or store after it. This is what keeps the plain loads of a payload
// copy (or of a zero-copy callback) from being satisfied after the atomic
// re-load of intent that validates them; LDAR alone only orders *later*
// accesses after itself, not earlier plain loads.
TEXT ·loadFence(SB), NOSPLIT|NOFRAME, $0-0
	DMB	$0x9
	RET
