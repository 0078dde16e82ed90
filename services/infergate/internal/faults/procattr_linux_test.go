package faults_test

import "syscall"

// procAttr makes the kernel kill a child process when the test binary
// dies, even by a panic or a -timeout that skips every cleanup: a
// leftover NATS server or service would hold its port and CPU forever.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
