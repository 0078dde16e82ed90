// Package route tells which deployment an HTTP request is for: by Host,
// model-<deployment>.<project>.<base-domain>, or by path,
// /d/<project>/<deployment>/<rest>.
package route

import (
	"net/http"
	"strings"
)

// Kind is what a request is addressed to.
type Kind int

const (
	// Gateway: not a deployment; the gateway's own endpoints.
	Gateway Kind = iota
	// Deployment: a deployment, named in the Target.
	Deployment
	// Unroutable: meant for a deployment (a model-* host, a /d/ path) but
	// naming none.
	Unroutable
	// BadPath: for a deployment, but the path to send upstream has a "."
	// or ".." segment (also escaped, %2e, or with ';'-parameters, "..;"):
	// joined under the upstream's base path it could climb out of it, so
	// it is refused, not sent.
	BadPath
)

// Target is the deployment a request is for and the path to send it
// upstream (joined under the upstream URL's own path).
type Target struct {
	Project    string
	Deployment string
	Path       string
	RawPath    string
}

// HostPrefix starts every deployment's host name.
const HostPrefix = "model-"

// Parse routes r. Host routing wins over path routing, so a deployment's
// own /d/… or /healthz paths reach it. Names are lower-cased (host names
// are case-insensitive); a port on the host is ignored. baseDomain must be
// lower case.
func Parse(r *http.Request, baseDomain string) (Target, Kind) {
	return Of(r.Host, r.URL.Path, r.URL.RawPath, baseDomain)
}

// Of routes a request by its Host and its URL's path (decoded) and raw
// path (url.URL.RawPath: empty when the path's default escaping is the
// client's), as Parse does.
func Of(host, path, rawPath, baseDomain string) (Target, Kind) {
	host = hostname(host)
	if len(host) >= len(HostPrefix) && strings.EqualFold(host[:len(HostPrefix)], HostPrefix) {
		return checkPath(fromHost(strings.ToLower(host[len(HostPrefix):]), baseDomain, path, rawPath))
	}
	if path == "/d" || strings.HasPrefix(path, "/d/") {
		return checkPath(fromPath(path, rawPath))
	}
	return Target{}, Gateway
}

// checkPath makes a deployment target whose path has dot-segments a
// BadPath.
func checkPath(t Target, k Kind) (Target, Kind) {
	if k == Deployment && dotSegment(t.Path) {
		return t, BadPath
	}
	return t, k
}

// dotSegment reports whether the decoded path has a "." or ".." segment,
// also with ';'-parameters ("..;", ".;x=1"): Java servlet containers
// (Tomcat, Jetty) and proxies in front of them drop the parameters and
// then climb ("/..;/admin" is "/../admin" to them). A backslash counts as
// a separator too, as it does for Windows servers ("/v1/..\admin").
func dotSegment(p string) bool {
	for p != "" {
		var seg string
		if i := strings.IndexAny(p, "/\\"); i >= 0 {
			seg, p = p[:i], p[i+1:]
		} else {
			seg, p = p, ""
		}
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// hostname is host without its port and trailing dot.
func hostname(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	return strings.TrimSuffix(host, ".")
}

// fromHost routes <deployment>.<project>.<base-domain>.
func fromHost(rest, baseDomain, path, rawPath string) (Target, Kind) {
	names, ok := strings.CutSuffix(rest, "."+baseDomain)
	if !ok {
		return Target{}, Unroutable
	}
	dep, project, ok := strings.Cut(names, ".")
	if !ok || !label(dep) || !label(project) {
		return Target{}, Unroutable
	}
	return Target{Project: project, Deployment: dep, Path: path, RawPath: rawPath}, Deployment
}

// fromPath routes /d/<project>/<deployment>/<rest> to /<rest>.
func fromPath(path, rawPath string) (Target, Kind) {
	project, dep, rest, ok := splitPath(path)
	if !ok {
		return Target{}, Unroutable
	}
	t := Target{Project: strings.ToLower(project), Deployment: strings.ToLower(dep), Path: rest}
	if rawPath != "" {
		// Keep the client's escaping of the rest; the names themselves
		// are DNS labels, the same escaped or not.
		if p, d, raw, ok := splitPath(rawPath); ok && p == project && d == dep {
			t.RawPath = raw
		}
	}
	if !label(t.Project) || !label(t.Deployment) {
		return Target{}, Unroutable
	}
	return t, Deployment
}

func splitPath(p string) (project, dep, rest string, ok bool) {
	p, ok = strings.CutPrefix(p, "/d/")
	if !ok {
		return "", "", "", false
	}
	project, p, ok = strings.Cut(p, "/")
	if !ok {
		return "", "", "", false
	}
	dep, rest, _ = strings.Cut(p, "/")
	return project, dep, "/" + rest, project != "" && dep != ""
}

// label reports whether s can be a project or deployment name: a DNS
// label of lower-case letters, digits and hyphens.
func label(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
