//go:build !linux

package sockprobe

const canPeek = false

func peek(uintptr) State { return Unknown }
