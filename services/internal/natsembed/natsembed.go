// Package natsembed runs an in-process NATS server with JetStream, for the
// one-process stack and for tests.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"net/url"
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
	// Domain is the server's JetStream domain: the hub's and each
	// region's leaf server have their own (docs/multi-region.md); empty:
	// none.
	Domain string
	// LeafPort, if not 0, accepts leaf-node connections on it (-1: a free
	// port, see LeafURL): the hub's side of a region's link.
	LeafPort int
	// LeafRemotes are the hub's leaf-node URLs this server connects to as
	// a region's leaf server; LeafNkeySeed, if set, is its nkey seed there.
	LeafRemotes  []*url.URL
	LeafNkeySeed string
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
	srv  *server.Server
	leaf server.LeafNodeOpts
}

// Start starts a server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	leaf, err := leafOpts(cfg)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(&server.Options{
		ServerName:      cfg.ServerName,
		Host:            cfg.Host,
		Port:            cfg.Port,
		JetStream:       true,
		StoreDir:        cfg.StoreDir,
		NoLog:           !cfg.Logs,
		NoSigs:          true,
		SyncAlways:      cfg.SyncAlways,
		Nkeys:           cfg.Users,
		JetStreamDomain: cfg.Domain,
		LeafNode:        leaf,
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
	return &Server{srv: srv, leaf: leaf}, nil
}

func leafOpts(cfg Config) (server.LeafNodeOpts, error) {
	var lo server.LeafNodeOpts
	if cfg.LeafPort == -1 {
		// The server does not say which port it picked: pick it here.
		ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, "0"))
		if err != nil {
			return lo, fmt.Errorf("natsembed: leaf port: %w", err)
		}
		cfg.LeafPort = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	if cfg.LeafPort != 0 {
		lo.Host, lo.Port = cfg.Host, cfg.LeafPort
		// Regions link only through the URLs they are given (a load
		// balancer, a proxy), never around them to an advertised address.
		lo.NoAdvertise = true
	}
	if len(cfg.LeafRemotes) > 0 {
		// Reconnect quickly: a region's link coming back is what ends
		// its staleness.
		lo.ReconnectInterval = 250 * time.Millisecond
		lo.Remotes = []*server.RemoteLeafOpts{{URLs: cfg.LeafRemotes, Nkey: cfg.LeafNkeySeed}}
	}
	return lo, nil
}

// LeafURL is the nats-leaf:// URL regions' leaf servers connect to; empty
// when the server accepts no leaf-node connections.
func (s *Server) LeafURL() string {
	if s.leaf.Port == 0 {
		return ""
	}
	return fmt.Sprintf("nats-leaf://%s", net.JoinHostPort(s.leaf.Host, fmt.Sprint(s.leaf.Port)))
}

// LeafNodes is how many leaf-node connections the server has now.
func (s *Server) LeafNodes() int { return s.srv.NumLeafNodes() }

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Domain is the server's JetStream domain ("" for none).
func (s *Server) Domain() string { return s.srv.JetStreamConfig().Domain }

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
