// Package natsembed runs an in-process NATS server with JetStream, for the
// one-process stack and for tests.
package natsembed

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config says where the embedded server keeps its files and listens.
type Config struct {
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port to listen on; 0 or -1 picks a free port. The default is not 4222,
	// which a system NATS server may already hold.
	Port int
	// ServerName names the server in its own logs; default "infergate".
	ServerName string
	// Logs enables the server's own logging.
	Logs bool
	// ReadyTimeout bounds the wait for the server to accept connections;
	// default 10 s.
	ReadyTimeout time.Duration
	// SyncAlways fsyncs every JetStream write before acknowledging it
	// (sync_interval: always, as deploy/nats/nats-server.conf sets); the
	// default syncs every 2 minutes.
	SyncAlways bool
	// Users are the nkey users that may connect, each with its
	// permissions (natsauth); none: anyone may, with every permission
	// (tests).
	Users []*server.NkeyUser
}

func (c *Config) setDefaults() {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = -1
	}
	if c.ServerName == "" {
		c.ServerName = "infergate"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 10 * time.Second
	}
}

// Validate reports every problem with the config at once.
func (c *Config) Validate() error {
	var errs []error
	if c.StoreDir == "" {
		errs = append(errs, errors.New("natsembed: StoreDir is required"))
	}
	if c.Port < -1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("natsembed: port %d out of range", c.Port))
	}
	return errors.Join(errs...)
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	srv *server.Server
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: cfg.ServerName,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoLog:      !cfg.Logs,
		NoSigs:     true,
		SyncAlways: cfg.SyncAlways,
		Nkeys:      cfg.Users,
	})
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	if cfg.Logs {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(cfg.ReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsembed: server not ready after %s", cfg.ReadyTimeout)
	}
	return &Server{srv: srv}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Connect opens a client connection to the server.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		return nil, fmt.Errorf("natsembed: connect: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits until it has stopped.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
