// Package keys is the key service's public face inside the repository: it
// builds the infergate.key.v1.KeyService handler for the service's own
// process (cmd/infergate-keys) and for the one-process stack.
package keys

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/keys/internal/keyservice"
)

// Config is what the key service needs; see keyservice.Config.
type Config = keyservice.Config

// compressMinBytes is the smallest response the handler compresses.
// connect-go compresses every response by default when the client accepts
// gzip; the key service's answers are a few hundred bytes, where gzip
// saves nothing and its per-response set-up (flate.Writer.Reset) cost 15 %
// of the CPU of CreateKey under load (docs/benchmarks.md, control-plane
// writes).
const compressMinBytes = 1024

// NewHandler returns the Connect/gRPC/gRPC-Web handler and the path to
// mount it on. opts come after the handler's own, so a caller can
// override them.
func NewHandler(cfg Config, opts ...connect.HandlerOption) (string, http.Handler, error) {
	srv, err := keyservice.New(cfg)
	if err != nil {
		return "", nil, err
	}
	opts = append([]connect.HandlerOption{connect.WithCompressMinBytes(compressMinBytes)}, opts...)
	path, h := keyv1connect.NewKeyServiceHandler(srv, opts...)
	return path, h, nil
}
