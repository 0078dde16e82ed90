// This file is net/http/internal's chunked reader (Copyright 2009 The Go
// Authors, BSD-style licence: see Go's LICENSE), with one change: the
// buffered reader is not the reader's own but handed to each Read, so
// the relay can give a stream's read buffer back while it waits for the
// upstream and borrow another one for the next chunk. The decoding —
// and so what it accepts and refuses — is net/http's, which
// FuzzResponseAgainstNetHTTP checks.

package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

const maxChunkLineLength = 4096 // <= the upstream read buffer

var errChunkLineTooLong = errors.New("h1: chunk line too long")

// chunkedReader decodes a chunked body read from the bufio.Reader each
// Read is given. Its state between two Reads is its own fields only.
type chunkedReader struct {
	n        uint64 // unread bytes in chunk
	err      error
	buf      [2]byte
	checkEnd bool  // whether need to check for \r\n chunk footer
	excess   int64 // "excessive" chunk overhead, for malicious sender detection
}

func (cr *chunkedReader) beginChunk(r *bufio.Reader) {
	// chunk-size CRLF
	var line []byte
	line, cr.err = readChunkLine(r)
	if cr.err != nil {
		return
	}
	cr.excess += int64(len(line)) + 2 // header, plus \r\n after the chunk data
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1] // trailing whitespace only, as net/http
	}
	line, _, _ = bytes.Cut(line, []byte(";")) // chunk extensions are dropped
	cr.n, cr.err = parseHexUint(line)
	if cr.err != nil {
		return
	}
	// 16 bytes of overhead per chunk are allowed, plus twice the chunk's
	// data (a byte at a time is legitimate; long extensions per byte are
	// not).
	cr.excess -= 16 + (2 * int64(cr.n))
	cr.excess = max(cr.excess, 0)
	if cr.excess > 16*1024 {
		cr.err = errors.New("h1: chunked encoding contains too much non-data")
	}
	if cr.n == 0 {
		cr.err = io.EOF
	}
}

func chunkHeaderAvailable(r *bufio.Reader) bool {
	n := r.Buffered()
	if n > 0 {
		peek, _ := r.Peek(n)
		return bytes.IndexByte(peek, '\n') >= 0
	}
	return false
}

// Read reads decoded body bytes into b from r; io.EOF after the last
// chunk (its trailer is the caller's to read).
func (cr *chunkedReader) Read(r *bufio.Reader, b []byte) (n int, err error) {
	for cr.err == nil {
		if cr.checkEnd {
			if n > 0 && r.Buffered() < 2 {
				// Some data: return it rather than block for more.
				break
			}
			// Two bytes, as io.ReadFull would read them (byte by byte
			// from the concrete reader: the decoder stays off the heap).
			if cr.buf[0], cr.err = r.ReadByte(); cr.err == nil {
				cr.buf[1], cr.err = r.ReadByte()
			}
			if cr.err == nil {
				if string(cr.buf[:]) != "\r\n" {
					cr.err = errors.New("h1: malformed chunked encoding")
					break
				}
			} else {
				if cr.err == io.EOF {
					cr.err = io.ErrUnexpectedEOF
				}
				break
			}
			cr.checkEnd = false
		}
		if cr.n == 0 {
			if n > 0 && !chunkHeaderAvailable(r) {
				// Enough read: do not block for the next chunk's header.
				break
			}
			cr.beginChunk(r)
			continue
		}
		if len(b) == 0 {
			break
		}
		rbuf := b
		if uint64(len(rbuf)) > cr.n {
			rbuf = rbuf[:cr.n]
		}
		var n0 int
		n0, cr.err = r.Read(rbuf)
		n += n0
		b = b[n0:]
		cr.n -= uint64(n0)
		// At the end of a chunk, the next two bytes must be "\r\n".
		if cr.n == 0 && cr.err == nil {
			cr.checkEnd = true
		} else if cr.err == io.EOF {
			cr.err = io.ErrUnexpectedEOF
		}
	}
	return n, cr.err
}

// readChunkLine reads a line up to \n, which must end in CRLF with no
// other CR (RFC 9112 allows no bare LF in chunked framing).
func readChunkLine(b *bufio.Reader) ([]byte, error) {
	p, err := b.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		} else if err == bufio.ErrBufferFull {
			err = errChunkLineTooLong
		}
		return nil, err
	}
	if idx := bytes.IndexByte(p, '\r'); idx == -1 {
		return nil, errors.New("h1: chunked line ends with bare LF")
	} else if idx != len(p)-2 {
		return nil, errors.New("h1: invalid CR in chunked line")
	}
	p = p[:len(p)-2]
	if len(p) >= maxChunkLineLength {
		return nil, errChunkLineTooLong
	}
	return p, nil
}

func parseHexUint(v []byte) (n uint64, err error) {
	if len(v) == 0 {
		return 0, errors.New("h1: empty hex number for chunk length")
	}
	for i, b := range v {
		switch {
		case '0' <= b && b <= '9':
			b = b - '0'
		case 'a' <= b && b <= 'f':
			b = b - 'a' + 10
		case 'A' <= b && b <= 'F':
			b = b - 'A' + 10
		default:
			return 0, errors.New("h1: invalid byte in chunk length")
		}
		if i == 16 {
			return 0, errors.New("h1: chunk length too large")
		}
		n <<= 4
		n |= uint64(b)
	}
	return n, nil
}

// scan decodes what it can of in, raw chunked bytes just read from the
// upstream, without reading more: it appends the data to dst and returns
// how much of in it used. It takes only the steady state of a stream —
// chunk data, the CRLF after it, and size lines that are bare hex digits
// ending in CRLF — and updates cr exactly as Read would have, so Read
// carries on from where it stopped. It stops (used < len(in)) at the
// first thing it does not take: a line not complete in in, the last
// chunk, extensions, whitespace, anything malformed. odd is true when it
// stopped at a complete line or CRLF it does not take (the bytes are for
// Read to judge); false when in just ran out.
func (cr *chunkedReader) scan(dst, in []byte) (out []byte, used int, odd bool) {
	i := 0
	for i < len(in) && cr.err == nil {
		if cr.checkEnd {
			if len(in)-i < 2 {
				return dst, i, false
			}
			if in[i] != '\r' || in[i+1] != '\n' {
				return dst, i, true
			}
			i += 2
			cr.checkEnd = false
			continue
		}
		if cr.n == 0 {
			j := bytes.IndexByte(in[i:], '\n')
			if j < 0 {
				return dst, i, len(in)-i > 18 // longer than any line scan takes
			}
			line := in[i : i+j]
			if len(line) < 2 || len(line) > 17 || line[len(line)-1] != '\r' {
				return dst, i, true
			}
			n, err := parseHexUint(line[:len(line)-1])
			if err != nil || n == 0 || n > 1<<40 {
				return dst, i, true
			}
			// The overhead rule of beginChunk; past it, Read refuses.
			excess := max(cr.excess+int64(len(line))+1-(16+2*int64(n)), 0)
			if excess > 16*1024 {
				return dst, i, true
			}
			cr.excess, cr.n = excess, n
			i += j + 1
			continue
		}
		k := int(min(cr.n, uint64(len(in)-i)))
		dst = append(dst, in[i:i+k]...)
		cr.n -= uint64(k)
		i += k
		if cr.n == 0 {
			cr.checkEnd = true
		}
	}
	return dst, i, cr.err != nil
}
