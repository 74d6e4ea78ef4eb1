package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"weft.dev/weft/internal/ingress/accesslog"
	"weft.dev/weft/internal/ingress/controller"
	"weft.dev/weft/internal/ingress/gateway"
	"weft.dev/weft/internal/ingress/nginx"
	"weft.dev/weft/internal/ingress/proxy"
	"weft.dev/weft/internal/ingress/togateway"
	"weft.dev/weft/internal/kubeclient"
	"weft.dev/weft/internal/logbuf"
)

func ingressCmd() *cobra.Command {
	var kubeconfig, httpAddr, httpsAddr, healthAddr, gatewayNS, gatewaySelector string
	var accessBuf int
	var profiling, eventLoops bool
	var cfg controller.Config
	pcfg := proxy.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "ingress",
		Short: "Serve Ingresses of weft's IngressClass: the controller and its HTTP(S) proxy in one process",
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			certs, err := controller.NewCerts()
			if err != nil {
				return err
			}
			log := logger()
			// Access records are written in batches (one write per request
			// costs the container runtime a read and a write each).
			access := logbuf.New(os.Stderr, accessBuf)
			pcfg.AccessLog = accesslog.New(access, "ingress-proxy")
			pcfg.NoEventLoop = !eventLoops
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			p := proxy.New(pcfg, log.With("component", "ingress-proxy"), reg)
			health := http.NewServeMux()
			health.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
			health.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			if profiling {
				health.HandleFunc("/debug/pprof/", pprof.Index)
				health.HandleFunc("/debug/pprof/profile", pprof.Profile)
				health.HandleFunc("/debug/pprof/trace", pprof.Trace)
			}
			var ctrl *controller.Controller
			var gwc *gateway.Controller
			if gatewayNS != "" {
				gwc, err = newGatewayController(kubeconfig, gatewayNS, gatewaySelector, reg, client, log, func() { ctrl.SwapPorts() })
				if err != nil {
					return err
				}
				cfg.GatewayPorts = gwc.Ports
			}
			ctrl = controller.New(cfg, client, p, certs, log.With("component", "ingress-controller"))
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			protocols := new(http.Protocols)
			protocols.SetHTTP1(true)
			protocols.SetHTTP2(true)
			protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
			servers := []*http.Server{
				{Addr: httpAddr, Handler: p, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10, Protocols: protocols, IdleTimeout: 120 * time.Second},
				{Addr: httpsAddr, Handler: p, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10, IdleTimeout: 120 * time.Second,
					TLSConfig: &tls.Config{GetCertificate: certs.Get, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}},
				{Addr: healthAddr, Handler: health, ReadHeaderTimeout: 5 * time.Second},
			}
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return ctrl.Run(gctx) })
			g.Go(func() error { access.Run(gctx, time.Second); return nil })
			if gwc != nil {
				g.Go(func() error { return gwc.Run(gctx) })
				g.Go(func() error {
					p.RunPorts(gctx, "", func() *http.Server {
						return &http.Server{ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10, Protocols: protocols, IdleTimeout: 120 * time.Second}
					})
					return nil
				})
			}
			// Plain HTTP: the proxy's fast path first, net/http for what it
			// hands over.
			plain, err := net.Listen("tcp", httpAddr)
			if err != nil {
				return err
			}
			g.Go(func() error { return p.Serve(gctx, plain, servers[0]) })
			for i, srv := range servers[1:] {
				g.Go(func() error {
					var err error
					if i == 0 {
						err = srv.ListenAndServeTLS("", "")
					} else {
						err = srv.ListenAndServe()
					}
					if errors.Is(err, http.ErrServerClosed) {
						return nil
					}
					return err
				})
			}
			g.Go(func() error {
				<-gctx.Done()
				// Finish requests in flight; upgraded connections are closed.
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for _, srv := range servers {
					_ = srv.Shutdown(sctx)
				}
				return nil
			})
			return g.Wait()
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	f.StringVar(&httpAddr, "http", ":80", "HTTP (and h2c) listen address")
	f.StringVar(&httpsAddr, "https", ":443", "HTTPS listen address")
	f.StringVar(&healthAddr, "health", ":10254", "/healthz and /metrics listen address")
	f.StringVar(&cfg.PublishService, "publish-service", "", "namespace/name of the LoadBalancer Service in front of this proxy: its addresses go into Ingress status")
	f.StringVar(&gatewayNS, "gateway-namespace", "", "serve the Gateway API: each Gateway's LoadBalancer Service is made in this namespace, the proxy's own (empty: no Gateway API)")
	f.StringVar(&gatewaySelector, "gateway-selector", "app.kubernetes.io/name=weft-ingress", "labels of the proxy's pods, which the Gateways' Services select")
	f.IntVar(&accessBuf, "access-log-buffer", 64<<10, "bytes of access records kept before a write, flushed at least every second (0: each written at once)")
	f.BoolVar(&profiling, "profiling", false, "serve Go's /debug/pprof/ on --health")
	f.BoolVar(&eventLoops, "event-loops", true, "serve plain-HTTP connections on one epoll loop per CPU (false: a goroutine per connection)")
	f.Int64Var(&pcfg.MaxBodyBytes, "max-body-bytes", pcfg.MaxBodyBytes, "largest request body (0: no limit)")
	cmd.AddCommand(ingressMigrateCmd())
	return cmd
}

func newGatewayController(kubeconfig, ns, selector string, reg prometheus.Registerer, client kubernetes.Interface, log *slog.Logger, changed func()) (*gateway.Controller, error) {
	sel, err := labels.ConvertSelectorToLabelsMap(selector)
	if err != nil {
		return nil, fmt.Errorf("--gateway-selector: %w", err)
	}
	gw, err := kubeclient.NewGatewayAPI(kubeconfig)
	if err != nil {
		return nil, err
	}
	return gateway.New(gateway.Config{Namespace: ns, Selector: sel, Metrics: reg}, client, gw, log.With("component", "gateway-controller"), changed), nil
}

func ingressMigrateCmd() *cobra.Command {
	var kubeconfig, output string
	var toGateway bool
	var gw togateway.Options
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Report, per Ingress, what weft does with each ingress-nginx annotation; with --to-gateway, write the Gateway API objects that do what weft's Ingresses do",
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			list, err := client.NetworkingV1().Ingresses("").List(cmd.Context(), metav1.ListOptions{})
			if err != nil {
				return err
			}
			ings := make([]*networkingv1.Ingress, len(list.Items))
			for i := range list.Items {
				ings[i] = &list.Items[i]
			}
			if toGateway {
				classes, err := client.NetworkingV1().IngressClasses().List(cmd.Context(), metav1.ListOptions{})
				if err != nil {
					return err
				}
				cs := make([]*networkingv1.IngressClass, len(classes.Items))
				for i := range classes.Items {
					cs[i] = &classes.Items[i]
				}
				return writeGateway(cmd.OutOrStdout(), togateway.Convert(controller.Ours(ings, cs), gw))
			}
			reports := nginx.Migrate(ings)
			switch output {
			case "json":
				return json.NewEncoder(os.Stdout).Encode(reports)
			case "text":
				nginx.WriteText(os.Stdout, reports)
				return nil
			}
			return fmt.Errorf("--output %q: want text or json", output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	f.BoolVar(&toGateway, "to-gateway", false, "print the Gateway, HTTPRoutes and ReferenceGrants (YAML) equivalent to the Ingresses weft serves; what cannot be expressed is listed in comments at the end")
	f.StringVar(&gw.Namespace, "gateway-namespace", "default", "namespace of the Gateway written")
	f.StringVar(&gw.Name, "gateway-name", "weft", "name of the Gateway written")
	f.StringVar(&gw.Class, "gateway-class", "weft", "GatewayClass of the Gateway written")
	return cmd
}

// writeGateway prints the objects as one YAML stream, then what could not
// be expressed as comments.
func writeGateway(w io.Writer, res *togateway.Result) error {
	objs := []any{res.Gateway}
	for _, g := range res.Grants {
		objs = append(objs, g)
	}
	for _, r := range res.Routes {
		objs = append(objs, r)
	}
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "---\n%s", b)
	}
	if len(res.NotExpressed) > 0 {
		fmt.Fprintln(w, "# Not expressed in the Gateway API (the Ingresses still do these):")
		for _, n := range res.NotExpressed {
			fmt.Fprintf(w, "#   %s\n", n)
		}
	}
	return nil
}
