package controlplane

import (
	"compress/gzip"
	"fmt"
	"io"

	"connectrpc.com/connect"
)

// MaxMessageBytes bounds one request message of every control-plane
// handler (health and reflection included), as sent and decompressed. The
// largest real request (UpdateDeploymentAuth with many key names) is a few
// KiB.
const MaxMessageBytes = 1 << 20

// limitOptions bound what one call can make a handler read and hold.
//
// connect.WithReadMaxBytes alone bounds memory: connect reads at most
// MaxMessageBytes+1 of a message, compressed or not. But to report the
// size of an oversized compressed message it then decompresses the rest
// into io.Discard (compression.go, Decompress), and gzip expands ~1000:1,
// so a 1 MiB body is a gigabyte of inflating. The bounded decompressor
// stops after MaxMessageBytes+1 bytes; the call still ends in
// resource_exhausted.
func limitOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(MaxMessageBytes),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &boundedGzip{limit: MaxMessageBytes + 1} },
			func() connect.Compressor { return gzip.NewWriter(io.Discard) },
		),
	}
}

// boundedGzip is a gzip reader that yields at most limit bytes per
// message, then fails.
type boundedGzip struct {
	gzip.Reader
	limit, left int64
}

var _ connect.Decompressor = (*boundedGzip)(nil)

// Reset starts a new message.
func (d *boundedGzip) Reset(r io.Reader) error {
	d.left = d.limit
	return d.Reader.Reset(r)
}

func (d *boundedGzip) Read(p []byte) (int, error) {
	if d.left <= 0 {
		return 0, connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("decompressed message is larger than %d bytes", d.limit-1))
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.Reader.Read(p)
	d.left -= int64(n)
	return n, err
}
