//go:build !linux

package authmap

import "errors"

// Elsewhere the key table stays on the Go heap.

func mapAnon(int) ([]byte, error) {
	return nil, errors.New("authmap: no off-heap tables on this system")
}
func adviseHuge([]byte) {}
func release([]byte)    {}
func unmap([]byte)      {}
