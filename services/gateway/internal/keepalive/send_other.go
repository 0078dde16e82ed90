//go:build !linux

package keepalive

import "errors"

// Send writes plainly where the raw write is not worth its own code.
const canSend = false

var errWouldBlock = errors.New("keepalive: would block")

func writeOnce(uintptr, []byte) (int, error) { return 0, errWouldBlock }
