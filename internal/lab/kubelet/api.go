package kubelet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// serveAPI serves the parts of the kubelet API the API server calls:
// container logs (kubectl logs) and health. Clients must present a
// certificate from the lab CA (the API server's kubelet client cert).
func (k *Kubelet) serveAPI(ctx context.Context) error {
	if k.cfg.ServingCert == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(k.cfg.ServingCert, k.cfg.ServingKey)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(k.cfg.ClientCA)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(caPEM)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/containerLogs/", k.handleLogs)
	// /logs/ serves the node's log directory, as the kubelet serves
	// /var/log (nodes/NAME/proxy/logs/ through the API server). The lab's
	// node logs are the files of its processes.
	if k.cfg.NodeLogDir != "" {
		mux.Handle("/logs/", http.StripPrefix("/logs/", http.FileServer(http.Dir(k.cfg.NodeLogDir))))
	}
	ss, err := newStreamingServer(k)
	if err != nil {
		return err
	}
	k.streaming = ss
	mux.HandleFunc("/exec/", k.handleExec)
	mux.HandleFunc("/portForward/", k.handlePortForward)
	srv := &http.Server{
		Addr:              net.JoinHostPort(k.cfg.NodeIP.String(), strconv.Itoa(k.cfg.Port)),
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err = srv.ListenAndServeTLS("", "")
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// handleLogs serves /containerLogs/{namespace}/{pod}/{container}.
func (k *Kubelet) handleLogs(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
	if len(parts) != 3 {
		http.Error(w, "want /containerLogs/NAMESPACE/POD/CONTAINER", http.StatusBadRequest)
		return
	}
	ns, name, cname := parts[0], parts[1], parts[2]
	k.mu.Lock()
	pr := k.pods[ns+"/"+name]
	k.mu.Unlock()
	if pr == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on %s", ns, name, k.cfg.NodeName), http.StatusNotFound)
		return
	}
	pr.mu.Lock()
	cr := pr.containers[cname]
	pr.mu.Unlock()
	if cr == nil {
		http.Error(w, fmt.Sprintf("container %q not found in pod %s/%s", cname, ns, name), http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	timestamps := q.Get("timestamps") == "true"
	follow := q.Get("follow") == "true"
	tail := -1
	if t := q.Get("tailLines"); t != "" {
		tail, _ = strconv.Atoi(t)
	}
	var since time.Time
	if s := q.Get("sinceTime"); s != "" {
		since, _ = time.Parse(time.RFC3339, s)
	}
	if s := q.Get("sinceSeconds"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			since = time.Now().Add(-time.Duration(n) * time.Second)
		}
	}
	limit := int64(-1)
	if l := q.Get("limitBytes"); l != "" {
		limit, _ = strconv.ParseInt(l, 10, 64)
	}
	lines, err := readLogLines(cr.logPath)
	if err != nil && !os.IsNotExist(err) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if tail >= 0 && tail < len(lines) {
		lines = lines[len(lines)-tail:]
	}
	w.Header().Set("Content-Type", "text/plain")
	var out io.Writer = w
	if limit >= 0 {
		out = &limitWriter{w: w, n: limit}
	}
	write := func(l logLine) {
		if !since.IsZero() {
			if ts, err := time.Parse(time.RFC3339Nano, l.ts); err == nil && ts.Before(since) {
				return
			}
		}
		if timestamps {
			fmt.Fprintf(out, "%s %s\n", l.ts, l.msg)
		} else {
			fmt.Fprintf(out, "%s\n", l.msg)
		}
	}
	for _, l := range lines {
		write(l)
	}
	if !follow {
		return
	}
	// Follow: poll the file for new lines until the pod stops or the client leaves.
	f, err := os.Open(cr.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	st, _ := f.Stat()
	_, _ = f.Seek(st.Size(), io.SeekStart)
	rd := bufio.NewReader(f)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	for {
		line, err := rd.ReadBytes('\n')
		if len(line) > 0 && err == nil {
			if l, ok := parseLogLine(line[:len(line)-1]); ok {
				write(l)
				if flusher != nil {
					flusher.Flush()
				}
			}
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-pr.stopped:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}
