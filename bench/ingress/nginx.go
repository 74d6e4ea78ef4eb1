package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/lab"
)

// nginxConf is nginx configured as an ingress controller would for n
// hosts: a server block per host, all to one upstream (the backend pod,
// as weft ingress reaches endpoints directly) with keep-alive, the
// forwarding headers weft ingress sends (X-Forwarded-For, -Host, -Proto;
// ingress-nginx sends these and more), an access log (weft ingress logs
// each request too), one worker per CPU.
func nginxConf(dir, backend string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "worker_processes auto;\npid %s/nginx.pid;\nerror_log %s/error.log;\n", dir, dir)
	b.WriteString("events { worker_connections 4096; }\n")
	fmt.Fprintf(&b, "http {\n  access_log %s/access.log;\n  server_names_hash_max_size 16384;\n  server_names_hash_bucket_size 128;\n", dir)
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "  %s_temp_path %s/%s;\n", t, dir, t)
	}
	fmt.Fprintf(&b, "  upstream web { server %s:8080; keepalive 64; }\n", backend)
	b.WriteString("  server { listen 80 default_server; return 404; }\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  server { listen 80; server_name %s; location / { proxy_pass http://web; proxy_http_version 1.1;"+
			" proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr;"+
			" proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Proto $scheme; } }\n", host(i))
	}
	b.WriteString("}\n")
	return b.String()
}

// startNginx (re)starts nginx in the nginx pod's network namespace with
// a configuration for n routes.
func (e *env) startNginx(ctx context.Context, n int) {
	e.stopNginx()
	if e.nginxDir == "" {
		dir, err := os.MkdirTemp("", "weft-bench-nginx-")
		check(err)
		e.nginxDir = dir
	}
	conf := filepath.Join(e.nginxDir, "nginx.conf")
	check(os.WriteFile(conf, []byte(nginxConf(e.nginxDir, e.backendIP, n)), 0o644))
	nctx, cancel := context.WithCancel(ctx)
	e.nginxCancel = cancel
	e.nginxStopped = make(chan error, 1)
	go func() {
		e.nginxStopped <- e.l.Exec(nctx, lab.ExecOptions{Target: ns + "/nginx", Argv: []string{"nginx", "-c", conf, "-g", "daemon off;"},
			Stdout: os.Stderr, Stderr: os.Stderr})
	}()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if len(e.nginxPIDs()) > 1 {
			return
		}
		select {
		case err := <-e.nginxStopped:
			check(fmt.Errorf("nginx stopped: %v", err))
		default:
		}
	}
	check(fmt.Errorf("nginx did not start"))
}

func (e *env) stopNginx() {
	if e.nginxCancel == nil {
		return
	}
	if b, err := os.ReadFile(filepath.Join(e.nginxDir, "nginx.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGQUIT)
		}
	}
	select {
	case <-e.nginxStopped:
	case <-time.After(10 * time.Second):
		e.nginxCancel()
		<-e.nginxStopped
	}
	e.nginxCancel = nil
	for i := 0; i < 50 && len(e.nginxPIDs()) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if e.nginxDir != "" && e.nginxCancel == nil {
		_ = os.Remove(filepath.Join(e.nginxDir, "nginx.pid"))
	}
}

// nginxPIDs are the master of this bench's nginx (its configuration path
// is on its command line) and its workers.
func (e *env) nginxPIDs() []int {
	if e.nginxDir == "" {
		return nil
	}
	masters := pidsWith("nginx: master process nginx -c " + e.nginxDir)
	if len(masters) != 1 {
		return masters
	}
	return append(masters, childrenOf(masters[0])...)
}

func childrenOf(parent int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(parent) {
			pid, _ := strconv.Atoi(d.Name())
			kids = append(kids, pid)
		}
	}
	return kids
}

// nginxRSS is the master's and the workers' RSS together.
func (e *env) nginxRSS() figure.Figure {
	pids := e.nginxPIDs()
	if len(pids) < 2 {
		return figure.Missing("nginx: %d processes", len(pids))
	}
	total := 0.0
	for _, pid := range pids {
		f := figure.RSS(pid)
		if !f.OK() {
			return f
		}
		total += f.Value
	}
	return figure.Of(total, nil)
}

// weftRSS is the weft ingress process's RSS.
func (e *env) weftRSS() figure.Figure {
	pids := pidsWith("weft ingress --publish-service")
	if len(pids) != 1 {
		return figure.Missing("weft ingress: %d processes", len(pids))
	}
	return figure.RSS(pids[0])
}

func pidsWith(needle string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), needle) {
			pids = append(pids, pid)
		}
	}
	return pids
}
