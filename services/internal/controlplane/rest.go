package controlplane

import (
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/infergate/infergate/gen/openapi"
	"github.com/infergate/infergate/services/internal/adminauth"
)

// The REST surface (docs/rest.md) is the same Connect handlers seen
// through Connect's transcoder, vanguard: every method with a
// google.api.http annotation is a REST route, and nothing else is. A new
// service's handler, mounted with Mux like the others, is transcoded as
// soon as one of its methods is annotated; `make gen` adds it to
// /openapi.json.

// OpenAPIPath serves the OpenAPI 3 document of the REST surface. It is
// public (see Serve): it describes the API's shape, which is public in the
// repository anyway, and holds no project's data; tools (code generators,
// Swagger UI) fetch it without credentials.
const OpenAPIPath = "/openapi.json"

// restCodec marshals REST bodies with the proto field names (snake_case),
// as the managed platform's API names its fields, and emits unset fields
// (an unset expires_at is null, as there). It refuses a body with a field
// it does not know (400 naming it) instead of ignoring it: a misspelt
// "api_key" must not turn a PATCH into one that changes nothing, and a
// platform-only field (image, flavor_name) is not silently dropped.
func restCodec(res vanguard.TypeResolver) vanguard.Codec {
	c := vanguard.NewJSONCodec(res)
	c.MarshalOptions.UseProtoNames = true
	c.UnmarshalOptions.DiscardUnknown = false
	return restJSON{*c}
}

// restJSON is the JSON codec whose decoding failures — a malformed body,
// an unknown field, a string where a list goes — are the caller's:
// invalid_argument (400), where the transcoder would answer 500.
type restJSON struct {
	vanguard.JSONCodec
}

var _ vanguard.RESTCodec = restJSON{}

func (c restJSON) Unmarshal(data []byte, msg proto.Message) error {
	return badBody(c.JSONCodec.Unmarshal(data, msg))
}

func (c restJSON) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	return badBody(c.JSONCodec.UnmarshalField(data, msg, field))
}

func badBody(err error) error {
	if err == nil {
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("request body: %w", err))
}

// restHandler transcodes REST requests for the handlers of the named
// services (those mounted at "/<service>/") into Connect calls of the
// handler itself — with its interceptors and message limits — and answers
// the rest with the REST error shape.
func restHandler(handlers map[string]http.Handler, services []string) (http.Handler, error) {
	var svcs []*vanguard.Service
	for _, name := range services {
		path := "/" + name + "/"
		h, ok := handlers[path]
		if !ok {
			continue
		}
		svcs = append(svcs, vanguard.NewService(path, h,
			vanguard.WithTargetProtocols(vanguard.ProtocolConnect),
			vanguard.WithTargetCodecs(vanguard.CodecProto),
			vanguard.WithNoTargetCompression(),
			vanguard.WithMaxMessageBufferBytes(MaxMessageBytes),
		))
	}
	t, err := vanguard.NewTranscoder(svcs,
		vanguard.WithCodec(restCodec),
		vanguard.WithUnknownHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			adminauth.WriteRESTError(w, connect.CodeNotFound, fmt.Sprintf("no route %s %s", r.Method, truncate(r.URL.Path, 200)))
		})),
	)
	if err != nil {
		return nil, fmt.Errorf("controlplane: REST transcoder: %w", err)
	}
	return limitREST(t), nil
}

// limitREST refuses a REST body larger than MaxMessageBytes that says so
// in its Content-Length before reading a byte of it (413), and cuts one
// that grows past it while read (the transcoder then fails the call).
func limitREST(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxMessageBytes {
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			adminauth.WriteRESTError(w, connect.CodeResourceExhausted, fmt.Sprintf("request body is larger than %d bytes", MaxMessageBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxMessageBytes)
		next.ServeHTTP(&jsonErrors{ResponseWriter: w}, r)
	})
}

// jsonErrors labels every REST error answer as the JSON it is. The
// transcoder writes the error body as JSON, but when the call fails while
// the handler reads the request (a body that does not decode) it leaves
// the handler's Content-Type, application/proto, on it.
type jsonErrors struct {
	http.ResponseWriter
}

func (w *jsonErrors) WriteHeader(status int) {
	if status >= http.StatusBadRequest {
		w.Header().Set("Content-Type", "application/json")
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *jsonErrors) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *jsonErrors) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveOpenAPI answers GET and HEAD of OpenAPIPath.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		adminauth.WriteRESTError(w, connect.CodeInvalidArgument, "only GET and HEAD")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(openapi.JSON)
}

// publicOpenAPI lets exactly OpenAPIPath through without an admin token
// and sends every other request to authed.
func publicOpenAPI(authed http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == OpenAPIPath {
			serveOpenAPI(w, r)
			return
		}
		authed.ServeHTTP(w, r)
	})
}

func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
