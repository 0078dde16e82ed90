package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Code is the machine-readable code of an error answer.
type Code int

// The gateway's error codes.
const (
	CodeMissingAPIKey Code = iota
	CodeInvalidAPIKey
	CodeDeploymentNotFound
	CodeDeploymentNotReady
	CodeGatewayNotReady
	CodeGatewayStale
	CodeUpstreamUnavailable
	CodeInvalidPath
	CodeRequestTimeout
	CodeUpstreamTimeout
	numCodes
)

var errorTexts = [numCodes]struct{ code, typ, message string }{
	CodeMissingAPIKey: {"missing_api_key", "invalid_request_error",
		"No API key provided. Send your infergate API key in the X-API-Key header (or as Authorization: Bearer <key>)."},
	CodeInvalidAPIKey: {"invalid_api_key", "invalid_request_error",
		"Invalid API key for this deployment."},
	CodeDeploymentNotFound: {"deployment_not_found", "invalid_request_error",
		"No such deployment at this gateway."},
	CodeDeploymentNotReady: {"deployment_not_ready", "server_error",
		"The deployment is not ready yet. Retry later."},
	CodeGatewayNotReady: {"gateway_not_ready", "server_error",
		"The gateway is starting and has not caught up with its configuration yet. Retry shortly."},
	CodeGatewayStale: {"gateway_stale", "server_error",
		"The gateway has lost touch with its configuration for longer than it may serve this deployment from memory. Retry shortly."},
	CodeUpstreamUnavailable: {"upstream_unavailable", "server_error",
		"The deployment's upstream did not answer."},
	CodeInvalidPath: {"invalid_path", "invalid_request_error",
		"The request path has a '.' or '..' segment (also escaped, or with ';' parameters); the gateway does not forward such paths."},
	CodeRequestTimeout: {"request_timeout", "invalid_request_error",
		"The request body did not arrive in time."},
	CodeUpstreamTimeout: {"upstream_timeout", "server_error",
		"The deployment's upstream did not answer in time."},
}

// errorBodies are the answers' JSON, made once: writing an error allocates
// nothing.
var errorBodies = func() (b [numCodes][]byte) {
	for c, t := range errorTexts {
		var body struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
				Param   any    `json:"param"`
				Code    string `json:"code"`
			} `json:"error"`
		}
		body.Error.Message, body.Error.Type, body.Error.Code = t.message, t.typ, t.code
		j, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		b[c] = append(j, '\n')
	}
	return b
}()

// String is the code as the body says it, e.g. "invalid_api_key".
func (c Code) String() string { return errorTexts[c].code }

// RetryAfterStale is the Retry-After, in seconds, of a gateway_stale
// answer: about when a gateway that got its connection back has caught up.
const RetryAfterStale = "5"

// Refuse answers r with an error without reading its body: if r has one
// (HTTP/1), the connection then closes at once — net/http would
// otherwise wait for the body (to drain it) before sending the answer,
// or after it, with no bound.
func Refuse(w http.ResponseWriter, r *http.Request, status int, c Code) {
	if r.ContentLength != 0 && r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
		defer func() { _ = http.NewResponseController(w).SetReadDeadline(time.Now()) }()
	}
	WriteError(w, status, c)
}

// WriteError answers with an OpenAI-style error body:
// {"error": {"message", "type", "param", "code"}}.
func WriteError(w http.ResponseWriter, status int, c Code) {
	h := w.Header()
	if c == CodeGatewayStale {
		h.Set("Retry-After", RetryAfterStale)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(errorBodies[c])))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(errorBodies[c])
}
