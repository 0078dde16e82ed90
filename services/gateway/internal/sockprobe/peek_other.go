//go:build !linux

package sockprobe

import "syscall"

const canPeek = false

func peek(uintptr) State { return Unknown }

const rawIO = false

func rawRead(uintptr, []byte) (int, syscall.Errno)  { return 0, syscall.EINVAL }
func rawWrite(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.EINVAL }
