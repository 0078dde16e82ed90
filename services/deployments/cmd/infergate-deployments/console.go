package main

import (
	"flag"
	"net"
	"net/http"
	"strconv"

	"github.com/infergate/infergate/services/internal/console"
	"github.com/infergate/infergate/services/internal/controlplane"
)

// consoleFlags host the web console (package console) in this process,
// at /console/ on its own port. The console calls the deployment service
// here over loopback and the key and audit services at their URLs, each
// with the signed-in admin's token: it has no access of its own.
type consoleFlags struct {
	enabled        bool
	keysURL        string
	auditURL       string
	deploymentsURL string
	secureCookies  bool
}

func (c *consoleFlags) register(fs *flag.FlagSet) {
	on, _ := strconv.ParseBool(controlplane.Env("INFERGATE_CONSOLE", "false"))
	secure, _ := strconv.ParseBool(controlplane.Env("INFERGATE_CONSOLE_SECURE_COOKIES", "false"))
	fs.BoolVar(&c.enabled, "console", on, "serve the web console at /console/ (env INFERGATE_CONSOLE)")
	fs.StringVar(&c.keysURL, "console-keys-url", controlplane.Env("INFERGATE_CONSOLE_KEYS_URL", "http://127.0.0.1:8081"),
		"URL of the key service, for the console (env INFERGATE_CONSOLE_KEYS_URL)")
	fs.StringVar(&c.auditURL, "console-audit-url", controlplane.Env("INFERGATE_CONSOLE_AUDIT_URL", "http://127.0.0.1:8083"),
		"URL of the audit service, for the console (env INFERGATE_CONSOLE_AUDIT_URL)")
	fs.StringVar(&c.deploymentsURL, "console-deployments-url", controlplane.Env("INFERGATE_CONSOLE_DEPLOYMENTS_URL", ""),
		"URL of the deployment service, for the console; default this process over loopback (env INFERGATE_CONSOLE_DEPLOYMENTS_URL)")
	fs.BoolVar(&c.secureCookies, "console-secure-cookies", secure,
		"mark the console's cookies Secure although this process sees plain HTTP (behind a TLS-terminating proxy; env INFERGATE_CONSOLE_SECURE_COOKIES)")
}

// mount adds the console to handlers when --console is set.
func (c *consoleFlags) mount(handlers map[string]http.Handler, p *controlplane.Plane, cfg controlplane.Config) error {
	if !c.enabled {
		return nil
	}
	self := c.deploymentsURL
	if self == "" {
		self = "http://" + loopback(cfg.Addr)
	}
	h, err := console.New(console.Config{
		KeysURL: c.keysURL, DeploymentsURL: self, AuditURL: c.auditURL,
		Tokens: p.Tokens, Secure: c.secureCookies, Log: p.Log,
	})
	if err != nil {
		return err
	}
	handlers[console.Path] = h
	return nil
}

// loopback is addr with an unspecified host (":8082", "0.0.0.0:8082")
// replaced by 127.0.0.1.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
