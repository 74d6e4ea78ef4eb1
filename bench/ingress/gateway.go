package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"weft.dev/weft/bench/internal/figure"
	"weft.dev/weft/internal/ingress/gateway"
	"weft.dev/weft/internal/kubeclient"
	"weft.dev/weft/internal/testserver"
)

// gatewayPhase is the Gateway API's part: HTTPRoutes on one Gateway
// served by the same weft ingress.
type gatewayPhase struct {
	routes         int
	propagation    []float64 // ms
	propagationErr error
	stages         string    // mean time of each sync stage during propagation
	creates        []float64 // ms each round's create call took (API server and etcd)
	changes        int
	load           testserver.LoadResult
	loadErr        error
	rss            figure.Figure
}

func gwHost(i int) string { return fmt.Sprintf("g%d.example.com", i) }

func httpRoute(name, host, path string) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "bench"}}},
		Hostnames:       []gwv1.Hostname{gwv1.Hostname(host)},
		Rules: []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(path)}}},
			BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "web", Port: ptr.To(gwv1.PortNumber(80))}}}}}}}}
}

// gateway measures, with n HTTPRoutes on one Gateway: propagation of a
// new route (create → first 200), requests failed under load during 100
// route changes, and weft ingress's memory.
func (e *env) gateway(ctx context.Context, n, props int) *gatewayPhase {
	gw, err := kubeclient.NewGatewayAPI(e.l.Kubeconfig())
	check(err)
	_, err = gw.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{})
	check(err)
	_, err = gw.GatewayV1().Gateways(ns).Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench"},
		Spec: gwv1.GatewaySpec{GatewayClassName: "bench", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}, metav1.CreateOptions{})
	check(err)
	fmt.Fprintf(os.Stderr, "creating %d HTTPRoutes\n", n)
	for i := 0; i < n; i++ {
		_, err := gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(fmt.Sprintf("g%05d", i), gwHost(i), "/"), metav1.CreateOptions{})
		check(err)
	}
	addr := gatewayAddr(ctx, gw)
	ph := &gatewayPhase{routes: n}
	if err := e.waitServedHost(ctx, addr, gwHost(n-1)); err != nil {
		ph.propagationErr, ph.loadErr, ph.rss = err, err, figure.Missing("%v", err)
		return ph
	}
	if err := waitStatuses(ctx, gw, n); err != nil {
		ph.propagationErr, ph.loadErr, ph.rss = err, err, figure.Missing("%v", err)
		return ph
	}
	before, berr := syncStages()
	ph.propagation, ph.creates, ph.propagationErr = e.gatewayPropagation(ctx, gw, addr, props)
	if after, aerr := syncStages(); berr == nil && aerr == nil {
		ph.stages = stageMeans(before, after)
	} else {
		fmt.Fprintf(os.Stderr, "sync stages: %v %v\n", berr, aerr)
	}
	ph.changes, ph.load, ph.loadErr = e.gatewayChanges(ctx, gw, addr)
	ph.rss = e.weftRSS()
	return ph
}

// waitStatuses waits until weft has written the Accepted condition of
// all n HTTPRoutes: propagation is timed on a settled controller, not
// against its backlog of status writes from the bulk create.
func waitStatuses(ctx context.Context, gw gwclient.Interface, n int) error {
	start := time.Now()
	for deadline := start.Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(3 * time.Second) {
		list, err := gw.GatewayV1().HTTPRoutes(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		done := 0
		for _, r := range list.Items {
			for _, p := range r.Status.Parents {
				if p.ControllerName == gateway.ControllerName && meta.IsStatusConditionTrue(p.Conditions, "Accepted") {
					done++
					break
				}
			}
		}
		if done >= n {
			fmt.Fprintf(os.Stderr, "statuses of %d HTTPRoutes written %.0f s after the last was served\n", done, time.Since(start).Seconds())
			return nil
		}
	}
	return fmt.Errorf("the HTTPRoutes' statuses were not all written in 5 minutes")
}

// gatewayAddr waits for the Gateway's address.
func gatewayAddr(ctx context.Context, gw gwclient.Interface) string {
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		g, err := gw.GatewayV1().Gateways(ns).Get(ctx, "bench", metav1.GetOptions{})
		check(err)
		if len(g.Status.Addresses) > 0 {
			return g.Status.Addresses[0].Value
		}
	}
	check(fmt.Errorf("the bench Gateway got no address"))
	return ""
}

func (e *env) waitServedHost(ctx context.Context, addr, h string) error {
	_, err := e.inClient(ctx, 3*time.Minute, filepath.Join(binDir, "weft"), "testserver", "until-ok", "http://"+addr+"/hostname",
		"--host", h, "--for", "150s", "--every", "100ms")
	return err
}

// gatewayPropagation creates one more HTTPRoute at a time and times, from
// the create call, the first 200 for its host.
func (e *env) gatewayPropagation(ctx context.Context, gw gwclient.Interface, addr string, rounds int) ([]float64, []float64, error) {
	var ms, creates []float64
	for r := 0; r < rounds; r++ {
		took, create, err := e.arrival(ctx, addr, fmt.Sprintf("gnew-%d", r), func(name, h string) error {
			_, err := gw.GatewayV1().HTTPRoutes(ns).Create(ctx, httpRoute(name, h, "/"), metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("propagation round %d: %v", r+1, err)
		}
		ms, creates = append(ms, took), append(creates, create)
	}
	return ms, creates, nil
}

// gatewayChanges keeps 4 workers of load on one route while 100 changes
// land (routes created, deleted, a path edited), 150 ms apart.
func (e *env) gatewayChanges(ctx context.Context, gw gwclient.Interface, addr string) (int, testserver.LoadResult, error) {
	routes := gw.GatewayV1().HTTPRoutes(ns)
	_, err := routes.Create(ctx, httpRoute("gchurn", "gchurn.example.com", "/p0"), metav1.CreateOptions{})
	check(err)
	const hold = 25 * time.Second
	done := make(chan struct{})
	var out string
	var lerr error
	go func() {
		defer close(done)
		out, lerr = e.inClient(ctx, hold+30*time.Second, filepath.Join(binDir, "weft"), "testserver", "load", "http://"+addr+"/hostname",
			"--host", gwHost(0), "--workers", "4", "--for", hold.String())
	}()
	time.Sleep(2 * time.Second)
	made := 0
	for i := range 100 {
		var err error
		switch i % 3 {
		case 0:
			_, err = routes.Create(ctx, httpRoute(fmt.Sprintf("gextra-%d", i), fmt.Sprintf("gextra-%d.example.com", i), "/"), metav1.CreateOptions{})
		case 1:
			err = routes.Delete(ctx, fmt.Sprintf("gextra-%d", i-1), metav1.DeleteOptions{})
		case 2:
			var r *gwv1.HTTPRoute
			if r, err = routes.Get(ctx, "gchurn", metav1.GetOptions{}); err == nil {
				r.Spec.Rules[0].Matches[0].Path.Value = ptr.To(fmt.Sprintf("/p%d", i))
				_, err = routes.Update(ctx, r, metav1.UpdateOptions{})
			}
		}
		if err == nil {
			made++
		}
		time.Sleep(150 * time.Millisecond)
	}
	<-done
	var lr testserver.LoadResult
	if lerr == nil {
		lerr = json.Unmarshal([]byte(out), &lr)
	}
	if lerr == nil && lr.Requests == 0 {
		lerr = fmt.Errorf("no request made")
	}
	return made, lr, lerr
}

func reportGateway(g *gatewayPhase, props int) {
	fmt.Println("#### Gateway API: HTTPRoutes on one Gateway, the same weft ingress")
	fmt.Println()
	fmt.Printf("After the Ingress phases, in the same lab: one Gateway (an HTTP listener, its own LoadBalancer address) and %d HTTPRoutes of one hostname each, "+
		"to the same backend. Propagation: %d HTTPRoutes created one by one, a prober in the client pod asking the Gateway's address for the new host every 1 ms, "+
		"from the create call to the first 200 (a round whose prober began asking only after the call is timed again with a new route), once weft has written all their statuses (the bulk create's status writes take about a minute). Changes: `weft testserver load` (4 workers) on one route for 25 s while 100 HTTPRoute changes land 150 ms apart "+
		"(created, deleted, a path edited). RSS: weft ingress, controller and proxy in one process, with the Ingress phase's 5,000 routes still there.\n\n", g.routes, props)
	p50, p99 := quantiles(g.propagation, g.propagationErr)
	failed := figure.Missing("%v", g.loadErr)
	requests := failed
	if g.loadErr == nil {
		failed, requests = figure.Count(float64(g.load.Failed), nil), figure.Of(float64(g.load.Requests), nil)
	}
	fmt.Println("| HTTPRoutes | propagation p50 | p99 | changes | requests during them | failed | weft ingress RSS |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- |")
	fmt.Printf("| %d | %s ms | %s ms | %d | %s | %s | %s MiB |\n\n", g.routes, p50.Format("%.1f"), p99.Format("%.1f"), g.changes,
		requests.Format("%.0f"), failed.Format("%.0f"), g.rss.Format("%.0f"))
	if g.propagationErr == nil {
		order := make([]int, len(g.propagation))
		for i := range order {
			order[i] = i
		}
		sort.Slice(order, func(a, b int) bool { return g.propagation[order[a]] < g.propagation[order[b]] })
		var ms []string
		for _, i := range order {
			ms = append(ms, fmt.Sprintf("%.0f (%.0f)", g.propagation[i], g.creates[i]))
		}
		fmt.Printf("Propagation rounds, sorted, in ms (of which the create call, API server and etcd): %s.\n\n", strings.Join(ms, ", "))
	}
	if g.stages != "" {
		fmt.Printf("Where a sync's time went during propagation (mean per stage, syncs): %s.\n\n", g.stages)
	}
	fmt.Printf("Targets: propagation p99 ≤ 100 ms: %s; no request failed during the changes: %s; memory ≤ 150 MiB: %s.\n\n",
		p99.Verdict(func(x float64) bool { return x <= 100 }), failed.Verdict(func(x float64) bool { return x == 0 }),
		g.rss.Verdict(func(x float64) bool { return x <= 150 }))
}
