// Package testserver is the lab's default container: HTTP with a few
// introspection endpoints, and TCP and UDP echo. Tests use it to see who
// they reached (/hostname) and with which source address (/clientip).
package testserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Config says where to listen.
type Config struct {
	HTTPPort int
	TCPPort  int
	UDPPort  int
	// GRPCPort serves the gRPC health service over h2c (0: off).
	GRPCPort int
	// Name is what /hostname returns: the pod name (POD_NAME, else hostname).
	Name string
	// DNSPort, when set, serves the outside.test zone over UDP and TCP;
	// WWWAddress is the address www.outside.test resolves to.
	DNSPort    int
	WWWAddress string
	// RecordsFile, when set, holds more A records of the zone, read at
	// every query so a test can change an answer: "name ttl address...".
	RecordsFile string
}

// Server runs the three listeners.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New returns a server; Name defaults to $POD_NAME or the hostname.
func New(cfg Config, log *slog.Logger) *Server {
	if cfg.Name == "" {
		cfg.Name = os.Getenv("POD_NAME")
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	return &Server{cfg: cfg, log: log}
}

// Handler serves the HTTP endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, s.cfg.Name)
	})
	mux.HandleFunc("/clientip", func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, host)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if msg := r.URL.Query().Get("msg"); msg != "" {
			fmt.Fprint(w, msg)
			return
		}
		_, _ = io.Copy(w, io.LimitReader(r.Body, 1<<20))
	})
	mux.HandleFunc("/ws", serveWebSocket)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	})
	// /header/NAME: the request's header NAME, e.g. what a proxy added.
	mux.HandleFunc("/header/{name}", func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.PathValue("name"), "Host") {
			fmt.Fprint(w, r.Host) // net/http moves Host out of the headers
			return
		}
		fmt.Fprint(w, r.Header.Get(r.PathValue("name")))
	})
	// /delay/MS: answers after MS milliseconds (at most a minute), e.g.
	// to show a proxy's read timeout.
	mux.HandleFunc("/delay/{ms}", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.PathValue("ms"))
		if err != nil || ms < 0 || ms > 60000 {
			http.Error(w, "want 0 to 60000 milliseconds", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Fprint(w, s.cfg.Name)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "weft testserver %s\n", s.cfg.Name)
	})
	return mux
}

// Run serves until ctx ends or a listener fails.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 5)
	hs := &http.Server{Addr: ":" + strconv.Itoa(s.cfg.HTTPPort), Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- hs.ListenAndServe() }()
	tl, err := net.Listen("tcp", ":"+strconv.Itoa(s.cfg.TCPPort))
	if err != nil {
		return err
	}
	go func() { errc <- serveTCPEcho(tl) }()
	ul, err := net.ListenPacket("udp", ":"+strconv.Itoa(s.cfg.UDPPort))
	if err != nil {
		return err
	}
	go func() { errc <- serveUDPEcho(ul) }()
	if s.cfg.GRPCPort != 0 {
		gl, err := net.Listen("tcp", ":"+strconv.Itoa(s.cfg.GRPCPort))
		if err != nil {
			return err
		}
		go func() { errc <- serveGRPC(ctx, gl) }()
	}
	if s.cfg.DNSPort != 0 {
		www := net.ParseIP(s.cfg.WWWAddress)
		if www == nil || www.To4() == nil {
			return fmt.Errorf("--www-address %q is not an IPv4 address", s.cfg.WWWAddress)
		}
		addr := ":" + strconv.Itoa(s.cfg.DNSPort)
		for _, network := range []string{"udp", "tcp"} {
			ds := &dns.Server{Addr: addr, Net: network, Handler: dnsHandler(www, s.cfg.RecordsFile)}
			go func() { errc <- ds.ListenAndServe() }()
			defer func() { _ = ds.Shutdown() }()
		}
	}
	s.log.Info("testserver listening", "http", s.cfg.HTTPPort, "tcp", s.cfg.TCPPort, "udp", s.cfg.UDPPort, "name", s.cfg.Name)
	select {
	case <-ctx.Done():
		shCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(shCtx)
		tl.Close()
		ul.Close()
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

func serveTCPEcho(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func serveUDPEcho(pc net.PacketConn) error {
	buf := make([]byte, 65536)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		_, _ = pc.WriteTo(buf[:n], addr)
	}
}
