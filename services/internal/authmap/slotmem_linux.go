//go:build linux

package authmap

import "syscall"

func mapAnon(size int) ([]byte, error) {
	return syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
}

// adviseHuge asks for transparent huge pages; with THP "madvise" (or
// "always") the pages come as huge ones when first touched. Failing is
// harmless: the table works on small pages.
func adviseHuge(b []byte) { _ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) }

// release gives b's pages back; b stays mapped and reads as zeros.
func release(b []byte) { _ = syscall.Madvise(b, syscall.MADV_DONTNEED) }

func unmap(b []byte) { _ = syscall.Munmap(b) }
