//go:build !linux

package faults_test

import "syscall"

// procAttr: only Linux can tie a child's life to its parent's; elsewhere
// the test's cleanups kill the children.
func procAttr() *syscall.SysProcAttr { return nil }
