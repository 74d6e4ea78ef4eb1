package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
	npaclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
)

// DemoNamespace holds the demo's workload.
const DemoNamespace = "weft-demo"

// Check is one row of a connectivity table.
type Check struct {
	Node, From, To, What, Want, Got string
	OK                              bool
}

// Demo deploys test servers (two per worker node, each with a sidecar)
// and prints a connectivity table. It returns an error if any check fails.
func (l *Lab) Demo(ctx context.Context, w io.Writer) error {
	client, err := l.Client()
	if err != nil {
		return err
	}
	st, err := l.LoadState()
	if err != nil {
		return err
	}
	_ = client.CoreV1().Namespaces().Delete(ctx, DemoNamespace, metav1.DeleteOptions{})
	for i := 0; i < 120; i++ {
		if _, err := client.CoreV1().Namespaces().Get(ctx, DemoNamespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DemoNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	var workers []Node
	for _, n := range st.Nodes {
		if !n.ControlPlane {
			workers = append(workers, n)
		}
	}
	replicas := int32(2 * len(workers))
	dep := DemoDeployment(DemoNamespace, "echo", replicas)
	if _, err := client.AppsV1().Deployments(DemoNamespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return err
	}
	fmt.Fprintf(w, "• deployment %s/echo: %d pods (test server + sidecar), spread two per node\n", DemoNamespace, replicas)
	pods, err := WaitPodsReady(ctx, client, DemoNamespace, "app=echo", int(replicas), 2*time.Minute)
	if err != nil {
		return err
	}
	byNode := map[string][]corev1.Pod{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
	}
	nodeIP := map[string]string{}
	for _, n := range st.Nodes {
		nodeIP[n.Name] = n.IP.String()
	}
	var checks []Check
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, node := range nodes {
		ps := byNode[node]
		a := ps[0]
		if len(ps) > 1 {
			b := ps[1]
			got := l.podCurl(ctx, a, "", fmt.Sprintf("http://%s:8080/clientip", b.Status.PodIP))
			checks = append(checks, Check{Node: node, From: a.Name + " " + a.Status.PodIP, To: b.Name + " " + b.Status.PodIP,
				What: "pod IP → pod IP (source kept)", Want: a.Status.PodIP, Got: got, OK: got == a.Status.PodIP})
			got = l.podCurl(ctx, b, "", fmt.Sprintf("http://%s:8080/hostname", a.Status.PodIP))
			checks = append(checks, Check{Node: node, From: b.Name, To: a.Name,
				What: "pod IP → pod IP (reverse)", Want: a.Name, Got: got, OK: got == a.Name})
		}
		got := l.podCurl(ctx, a, "sidecar", "http://localhost:8080/hostname")
		checks = append(checks, Check{Node: node, From: a.Name + "/sidecar", To: a.Name + "/server",
			What: "container → container (localhost)", Want: a.Name, Got: got, OK: got == a.Name})
		got = l.podCurl(ctx, a, "", fmt.Sprintf("http://%s:8080/clientip", OutsideIP))
		checks = append(checks, Check{Node: node, From: a.Name, To: "outside " + OutsideIP,
			What: "pod → outside (masqueraded to node)", Want: nodeIP[node], Got: got, OK: got == nodeIP[node]})
	}
	fmt.Fprintf(w, "\nSame node:")
	PrintChecks(w, checks)
	// Across nodes: the first pod of every node to the first pod of every
	// other node, with the path the routing backend chose.
	var cross []Check
	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			a, b := byNode[from][0], byNode[to][0]
			got := l.podCurl(ctx, a, "", fmt.Sprintf("http://%s:8080/clientip", b.Status.PodIP))
			cross = append(cross, Check{Node: from + " → " + strings.TrimPrefix(to, "weft-"), From: a.Name + " " + a.Status.PodIP,
				To: b.Name + " " + b.Status.PodIP, What: "pod → pod across nodes via " + pathTo(from, b.Status.PodIP, st.Backend == "bgp"),
				Want: a.Status.PodIP, Got: got, OK: got == a.Status.PodIP})
		}
	}
	fmt.Fprintf(w, "Across nodes (backend %s):", st.Backend)
	PrintChecks(w, cross)
	checks = append(checks, cross...)

	// Services through weft's proxy: a ClusterIP from every node's pod and
	// a NodePort from the outside namespace.
	svc, err := client.CoreV1().Services(DemoNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	var svcChecks []Check
	for _, node := range nodes {
		a := byNode[node][0]
		var got string
		for i := 0; i < 20; i++ { // the proxy programs the service within moments
			got = l.podCurl(ctx, a, "", fmt.Sprintf("http://%s/clientip", svc.Spec.ClusterIP))
			if got == a.Status.PodIP {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		svcChecks = append(svcChecks, Check{Node: node, From: a.Name + " " + a.Status.PodIP, To: "echo " + svc.Spec.ClusterIP + ":80",
			What: "pod → ClusterIP (source kept)", Want: a.Status.PodIP, Got: got, OK: got == a.Status.PodIP})
	}
	for _, node := range nodes {
		url := fmt.Sprintf("http://%s:%d/hostname", nodeIP[node], svc.Spec.Ports[0].NodePort)
		var out, errb bytes.Buffer
		err := l.Exec(ctx, ExecOptions{Target: "outside", Argv: []string{"curl", "-sS", "-m", "5", url}, Stdout: &out, Stderr: &errb})
		got := strings.TrimSpace(out.String())
		if err != nil {
			got = "error: " + strings.TrimSpace(errb.String())
		}
		svcChecks = append(svcChecks, Check{Node: node, From: "outside " + OutsideIP, To: fmt.Sprintf("%s:%d", nodeIP[node], svc.Spec.Ports[0].NodePort),
			What: "outside → NodePort", Want: "an echo pod", Got: got, OK: strings.HasPrefix(got, "echo-")})
	}
	fmt.Fprintf(w, "Services (weft proxy, table inet weft-proxy):")
	PrintChecks(w, svcChecks)
	checks = append(checks, svcChecks...)

	// DNS through each pod's resolv.conf: the node-local cache, then weft dns.
	var dnsChecks []Check
	for _, node := range nodes {
		a := byNode[node][0]
		got := l.podCurl(ctx, a, "", "http://echo/hostname") // "echo" via the search path
		dnsChecks = append(dnsChecks, Check{Node: node, From: a.Name, To: "http://echo (search path)",
			What: "service name → ClusterIP", Want: "an echo pod", Got: got, OK: strings.HasPrefix(got, "echo-")})
		name := "www.outside.test"
		got = l.podRun(ctx, a, "getent", "hosts", name)
		if f := strings.Fields(got); len(f) > 0 {
			got = f[0]
		}
		dnsChecks = append(dnsChecks, Check{Node: node, From: a.Name, To: name,
			What: "outside name (forwarded upstream)", Want: OutsideIP, Got: got, OK: got == OutsideIP})
	}
	fmt.Fprintf(w, "DNS (node-local cache %s → weft dns %s):", NodeLocalDNS, ClusterDNS)
	PrintChecks(w, dnsChecks)
	checks = append(checks, dnsChecks...)

	ingressChecks, err := l.demoIngress(ctx, w, client, byNode[nodes[0]][0], nodeIP[nodes[0]], st.Backend == "bgp")
	if err != nil {
		return err
	}
	checks = append(checks, ingressChecks...)

	gatewayChecks, err := l.demoGateway(ctx, w, byNode[nodes[0]][0])
	if err != nil {
		return err
	}
	checks = append(checks, gatewayChecks...)

	policyChecks, err := l.demoPolicy(ctx, w, client, byNode[nodes[0]][0], byNode[nodes[len(nodes)-1]])
	if err != nil {
		return err
	}
	checks = append(checks, policyChecks...)
	for _, c := range checks {
		if !c.OK {
			return fmt.Errorf("connectivity check failed: %s from %s to %s", c.What, c.From, c.To)
		}
	}
	return nil
}

// demoIngress routes two hosts to the echo Service through weft ingress
// and asks for them from a pod (the LoadBalancer address) and from the
// outside namespace: the LoadBalancer address through the router when BGP
// announces it, else a node's NodePort of the ingress Service.
func (l *Lab) demoIngress(ctx context.Context, w io.Writer, client kubernetes.Interface, from corev1.Pod, node string, bgp bool) ([]Check, error) {
	prefix, exact := networkingv1.PathTypePrefix, networkingv1.PathTypeExact
	be := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "echo", Port: networkingv1.ServiceBackendPort{Number: 80}}}
	rule := func(host, path string, kind *networkingv1.PathType) networkingv1.IngressRule {
		return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: path, PathType: kind, Backend: be}}}}}
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "echo"}, Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("weft"),
		Rules: []networkingv1.IngressRule{rule("echo.example.com", "/", &prefix), rule("api.example.com", "/hostname", &exact)}}}
	dir, err := os.MkdirTemp("", "weft-demo-tls-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	caFile, err := demoTLS(ctx, client, ing, dir, "echo.example.com", "api.example.com")
	if err != nil {
		return nil, err
	}
	if _, err := client.NetworkingV1().Ingresses(DemoNamespace).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	svc, err := client.CoreV1().Services("kube-system").Get(ctx, "weft-ingress", metav1.GetOptions{})
	if err != nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
		return nil, fmt.Errorf("weft-ingress Service without a LoadBalancer address: %v", err)
	}
	lb := svc.Status.LoadBalancer.Ingress[0].IP
	viaLB := func(host, path string) string {
		var out, errb bytes.Buffer
		err := l.Exec(ctx, ExecOptions{Target: from.Namespace + "/" + from.Name, Stdout: &out, Stderr: &errb,
			Argv: []string{"curl", "-sS", "-m", "5", "--resolve", host + ":80:" + lb, "http://" + host + path}})
		if err != nil {
			return "error: " + strings.TrimSpace(errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	nodePort := fmt.Sprintf("%s:%d", node, svc.Spec.Ports[0].NodePort)
	httpsAddr := ""
	for _, p := range svc.Spec.Ports {
		if p.Port == 443 {
			httpsAddr = fmt.Sprintf("%s:%d", node, p.NodePort)
		}
	}
	if bgp {
		nodePort = lb + ":80" // announced to the router by BGP
		httpsAddr = lb + ":443"
	}
	fromOutside := func(host, path string) string {
		var out, errb bytes.Buffer
		err := l.Exec(ctx, ExecOptions{Target: "outside", Stdout: &out, Stderr: &errb,
			Argv: []string{"curl", "-sS", "-m", "5", "-H", "Host: " + host, "http://" + nodePort + path}})
		if err != nil {
			return "error: " + strings.TrimSpace(errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	var checks []Check
	for i := 0; i < 40 && !strings.HasPrefix(viaLB("echo.example.com", "/hostname"), "echo-"); i++ {
		time.Sleep(250 * time.Millisecond) // the controller's first sync of the new Ingress
	}
	for _, c := range []struct {
		from, host, path, want string
		get                    func(string, string) string
	}{
		{from.Name + " → " + lb, "echo.example.com", "/hostname", "echo-", viaLB},
		{from.Name + " → " + lb, "api.example.com", "/hostname", "echo-", viaLB},
		{from.Name + " → " + lb, "api.example.com", "/hostname/x", "no route", viaLB},
		{from.Name + " → " + lb, "nobody.example.com", "/", "no route", viaLB},
		{"outside → " + nodePort, "echo.example.com", "/hostname", "echo-", fromOutside},
	} {
		got := c.get(c.host, c.path)
		checks = append(checks, Check{Node: "-", From: c.from, To: c.host + c.path, What: "HTTP through weft ingress",
			Want: c.want + "…", Got: got, OK: strings.HasPrefix(got, c.want)})
	}
	checks = append(checks, l.tlsChecks(ctx, httpsAddr, caFile)...)
	fmt.Fprintf(w, "Ingress (weft ingress behind kube-system/weft-ingress, LoadBalancer %s; echo.example.com / Prefix, api.example.com /hostname Exact; TLS for both from Secrets):", lb)
	PrintChecks(w, checks)
	return checks, nil
}

// demoGateway serves echo.example.com through a Gateway of weft's class
// (its own LoadBalancer address): a rule for requests with X-Canary: yes
// redirects them, the rest reach the echo Service with a response header
// the route sets; a team's ListenerSet adds port 8080 for its own host.
func (l *Lab) demoGateway(ctx context.Context, w io.Writer, from corev1.Pod) ([]Check, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig())
	if err != nil {
		return nil, err
	}
	gw, err := gwclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := gw.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "weft"},
		Spec: gwv1.GatewayClassSpec{ControllerName: "weft.dev/gateway"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	if _, err := gw.GatewayV1().Gateways(DemoNamespace).Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "demo"},
		Spec: gwv1.GatewaySpec{GatewayClassName: "weft", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
			AllowedListeners: &gwv1.AllowedListeners{Namespaces: &gwv1.ListenerNamespaces{From: ptr.To(gwv1.NamespacesFromSame)}}}},
		metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	backend := []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo", Port: ptr.To(gwv1.PortNumber(80))}}}}
	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "echo"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "demo"}}},
		Hostnames:       []gwv1.Hostname{"echo.example.com"},
		Rules: []gwv1.HTTPRouteRule{
			{Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Name: "X-Canary", Value: "yes"}}}},
				Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwv1.HTTPRequestRedirectFilter{
					Hostname: ptr.To(gwv1.PreciseHostname("canary.example.com")), StatusCode: ptr.To(307)}}}},
			{BackendRefs: backend, Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterResponseHeaderModifier,
				ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "X-Served-By", Value: "gateway"}}}}}},
		}}}
	if _, err := gw.GatewayV1().HTTPRoutes(DemoNamespace).Create(ctx, route, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if err := demoListenerSet(ctx, gw, backend); err != nil {
		return nil, err
	}
	addr := ""
	for i := 0; i < 120 && addr == ""; i++ {
		if g, err := gw.GatewayV1().Gateways(DemoNamespace).Get(ctx, "demo", metav1.GetOptions{}); err == nil && len(g.Status.Addresses) > 0 {
			addr = g.Status.Addresses[0].Value
		} else {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if addr == "" {
		return nil, fmt.Errorf("Gateway %s/demo got no address", DemoNamespace)
	}
	askAt := func(hostPort string, hdr ...string) string {
		host, port, _ := strings.Cut(hostPort, ":")
		argv := []string{"curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code} %header{x-served-by}%{redirect_url}", "-H", "Host: " + host}
		for _, h := range hdr {
			argv = append(argv, "-H", h)
		}
		url := "http://" + addr + "/hostname"
		if port != "" {
			url = "http://" + addr + ":" + port + "/hostname"
		}
		var out, errb bytes.Buffer
		if err := l.Exec(ctx, ExecOptions{Target: from.Namespace + "/" + from.Name, Stdout: &out, Stderr: &errb, Argv: append(argv, url)}); err != nil {
			return "error: " + strings.TrimSpace(errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	for i := 0; i < 40 && (askAt("echo.example.com") != "200 gateway" || askAt("team.example.com:8080") != "200"); i++ {
		time.Sleep(250 * time.Millisecond) // the ports open, the routes land
	}
	var checks []Check
	for _, c := range []struct{ what, host, hdr, want string }{
		{"HTTPRoute → echo, response header set", "echo.example.com", "", "200 gateway"},
		{"header match → redirect", "echo.example.com", "X-Canary: yes", "307 http://canary.example.com/hostname"},
		{"ListenerSet team, port 8080 → echo", "team.example.com:8080", "", "200"},
	} {
		var got string
		if c.hdr == "" {
			got = askAt(c.host)
		} else {
			got = askAt(c.host, c.hdr)
		}
		checks = append(checks, Check{Node: "-", From: from.Name + " → " + addr, To: c.host + "/hostname " + c.hdr, What: c.what,
			Want: c.want, Got: got, OK: got == c.want})
	}
	fmt.Fprintf(w, "Gateway API (Gateway %s/demo of class weft, its own LoadBalancer %s; HTTPRoutes echo and team):", DemoNamespace, addr)
	PrintChecks(w, checks)
	return checks, nil
}

// demoListenerSet gives a team its own listener on the demo Gateway (port
// 8080, team.example.com) and a route attached to it alone.
func demoListenerSet(ctx context.Context, gw gwclient.Interface, backend []gwv1.HTTPBackendRef) error {
	ls := &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Name: "team"}, Spec: gwv1.ListenerSetSpec{
		ParentRef: gwv1.ParentGatewayReference{Name: "demo"},
		Listeners: []gwv1.ListenerEntry{{Name: "team", Port: 8080, Protocol: gwv1.HTTPProtocolType, Hostname: ptr.To(gwv1.Hostname("team.example.com"))}}}}
	if _, err := gw.GatewayV1().ListenerSets(DemoNamespace).Create(ctx, ls, metav1.CreateOptions{}); err != nil {
		return err
	}
	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "team"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Kind: ptr.To(gwv1.Kind("ListenerSet")), Name: "team"}}},
		Rules:           []gwv1.HTTPRouteRule{{BackendRefs: backend}}}}
	_, err := gw.GatewayV1().HTTPRoutes(DemoNamespace).Create(ctx, route, metav1.CreateOptions{})
	return err
}

// demoPolicy locks the demo namespace down (default deny ingress), then
// lets in only pods labelled role=frontend, and shows the denial's log
// line. target is a pod on the first node; others are two pods of another.
func (l *Lab) demoPolicy(ctx context.Context, w io.Writer, client kubernetes.Interface, target corev1.Pod, others []corev1.Pod) ([]Check, error) {
	if len(others) < 2 {
		return nil, fmt.Errorf("policy demo needs two pods on %s", others[0].Spec.NodeName)
	}
	frontend, stranger := others[0], others[1]
	url := fmt.Sprintf("http://%s:8080/hostname", target.Status.PodIP)
	probe := func(from corev1.Pod, want string) Check {
		var got string
		for i := 0; i < 20; i++ { // the agents write their tables within moments
			got = "blocked"
			var out, errb bytes.Buffer
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := l.Exec(cctx, ExecOptions{Target: from.Namespace + "/" + from.Name,
				Argv: []string{"curl", "-sS", "--connect-timeout", "0.5", "-m", "2", url}, Stdout: &out, Stderr: &errb})
			cancel()
			if err == nil {
				got = "allowed"
			}
			if got == want {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		return Check{Node: from.Spec.NodeName + " → " + strings.TrimPrefix(target.Spec.NodeName, "weft-"), From: from.Name, To: target.Name,
			Want: want, Got: got, OK: got == want}
	}
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default-deny-ingress"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := client.NetworkingV1().NetworkPolicies(DemoNamespace).Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	c := probe(frontend, "blocked")
	c.What = "default-deny-ingress: pod → pod"
	checks := []Check{c}
	if _, err := client.CoreV1().Pods(DemoNamespace).Patch(ctx, frontend.Name, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"role":"frontend"}}}`), metav1.PatchOptions{}); err != nil {
		return nil, err
	}
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-frontend"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "frontend"}}}}}}}}
	if _, err := client.NetworkingV1().NetworkPolicies(DemoNamespace).Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	c = probe(frontend, "allowed")
	c.What, c.From = "allow-frontend: role=frontend pod → pod", frontend.Name+" (role=frontend)"
	checks = append(checks, c)
	c = probe(stranger, "blocked")
	c.What = "allow-frontend: unlabelled pod → pod"
	checks = append(checks, c)
	more, err := l.demoClusterPolicy(ctx, func(want string) Check { return probe(frontend, want) }, frontend.Name)
	if err != nil {
		return nil, err
	}
	checks = append(checks, more...)
	more, err = l.demoDomainNames(ctx, frontend)
	if err != nil {
		return nil, err
	}
	checks = append(checks, more...)
	fmt.Fprintf(w, "NetworkPolicy and ClusterNetworkPolicy (table inet weft-policy, judged on the receiving node):")
	PrintChecks(w, checks)
	line := l.denialLine(target)
	fmt.Fprintf(w, "The denial, as %s's agent logged it:\n  %s\n\n", target.Spec.NodeName, line)
	return checks, nil
}

// demoClusterPolicy puts an admin ClusterNetworkPolicy Deny on the
// frontend's way in, which allow-frontend cannot override, then turns it
// into a Pass, which hands the decision back to allow-frontend.
func (l *Lab) demoClusterPolicy(ctx context.Context, probe func(want string) Check, frontend string) ([]Check, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig())
	if err != nil {
		return nil, err
	}
	cs := npaclient.NewForConfigOrDie(cfg).PolicyV1beta1().ClusterNetworkPolicies()
	p := &cnp.ClusterNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "demo-admin"},
		Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 10,
			Subject: cnp.ClusterNetworkPolicySubject{Namespaces: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: DemoNamespace}}},
			Ingress: []cnp.ClusterNetworkPolicyIngressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
				From: []cnp.ClusterNetworkPolicyIngressPeer{{Pods: &cnp.NamespacedPod{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "frontend"}}}}}}}}}
	if _, err := cs.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	c := probe("blocked")
	c.What, c.From = "admin ClusterNetworkPolicy Deny over allow", frontend+" (role=frontend)"
	checks := []Check{c}
	got, err := cs.Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	got.Spec.Ingress[0].Action = cnp.ClusterNetworkPolicyRuleActionPass
	if _, err := cs.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	c = probe("allowed")
	c.What, c.From = "admin rule as Pass: NetworkPolicy decides", frontend+" (role=frontend)"
	return append(checks, c), nil
}

// demoDomainNames lets the frontend reach www.outside.test and nothing
// else outside: its address is blocked until the pod has looked the name
// up through the node-local DNS cache, then reached by name.
func (l *Lab) demoDomainNames(ctx context.Context, frontend corev1.Pod) ([]Check, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig())
	if err != nil {
		return nil, err
	}
	cs := npaclient.NewForConfigOrDie(cfg).PolicyV1beta1().ClusterNetworkPolicies()
	subject := cnp.ClusterNetworkPolicySubject{Pods: &cnp.NamespacedPod{
		NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: DemoNamespace}},
		PodSelector:       metav1.LabelSelector{MatchLabels: map[string]string{"role": "frontend"}}}}
	pols := []*cnp.ClusterNetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "demo-egress-www"}, Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 20, Subject: subject,
			Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionAccept,
				To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"www.outside.test"}}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "demo-egress-outside"}, Spec: cnp.ClusterNetworkPolicySpec{Tier: cnp.AdminTier, Priority: 30, Subject: subject,
			Egress: []cnp.ClusterNetworkPolicyEgressRule{{Action: cnp.ClusterNetworkPolicyRuleActionDeny,
				To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{cnp.CIDR(netip.MustParsePrefix(OutsideIP + "/24").Masked().String())}}}}}}},
	}
	for _, p := range pols {
		if _, err := cs.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		defer func() { _ = cs.Delete(context.Background(), p.Name, metav1.DeleteOptions{}) }()
	}
	curl := func(url, want string) Check {
		got := ""
		for i := 0; i < 20 && got != want; i++ {
			got = "blocked"
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if l.Exec(cctx, ExecOptions{Target: frontend.Namespace + "/" + frontend.Name,
				Argv: []string{"curl", "-sS", "--connect-timeout", "0.5", "-m", "2", url}, Stdout: io.Discard, Stderr: io.Discard}) == nil {
				got = "allowed"
			}
			cancel()
			if got != want {
				time.Sleep(200 * time.Millisecond)
			}
		}
		return Check{Node: frontend.Spec.NodeName + " → outside", From: frontend.Name + " (role=frontend)", To: url, Want: want, Got: got, OK: got == want}
	}
	c1 := curl("http://"+OutsideIP+":8080/", "blocked")
	c1.What = "domainNames www.outside.test: before any lookup"
	c2 := curl("http://www.outside.test:8080/", "allowed")
	c2.What = "domainNames www.outside.test: by name"
	return []Check{c1, c2}, nil
}

// denialLine is the last "denied by NetworkPolicy" line of the agent on
// the pod's node that names the pod.
func (l *Lab) denialLine(p corev1.Pod) string {
	client, err := l.Client()
	if err != nil {
		return err.Error()
	}
	path, err := l.AgentLog(context.Background(), client, p.Spec.NodeName)
	if err != nil {
		return err.Error()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	last := "(none found)"
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "denied by NetworkPolicy") && strings.Contains(line, "dstPod="+p.Namespace+"/"+p.Name) {
			last = line
		}
	}
	return last
}

// pathTo says how node reaches ip: through the VXLAN device or directly.
func pathTo(node, ip string, bgp bool) string {
	out, err := exec.Command("ip", "-n", node, "route", "get", ip).Output()
	switch {
	case err != nil:
		return "?"
	case strings.Contains(string(out), "weft.vxlan"):
		return "VXLAN"
	case bgp && isRackGateway(viaOf(string(out))):
		return "BGP route via the rack router"
	case bgp:
		return "BGP route via the peer node"
	default:
		return "direct route"
	}
}

// viaOf returns the gateway of an `ip route get` answer ("" if none).
func viaOf(route string) string {
	f := strings.Fields(route)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			return f[i+1]
		}
	}
	return ""
}

// isRackGateway reports whether ip is the router's address on a rack.
func isRackGateway(ip string) bool {
	for r := 0; r < 26; r++ {
		if RackGateway(r).String() == ip {
			return true
		}
	}
	return false
}

// PrintChecks writes a table with a green ✓ or red ✗ per row.
func PrintChecks(w io.Writer, checks []Check) {
	fmt.Fprintf(w, "\n%-22s %-44s %-36s %-36s %s\n", "NODE", "CHECK", "FROM", "TO", "RESULT")
	for _, c := range checks {
		mark := "\033[32m✓\033[0m " + c.Got
		if !c.OK {
			mark = fmt.Sprintf("\033[31m✗\033[0m got %q, want %q", c.Got, c.Want)
		}
		fmt.Fprintf(w, "%-22s %-44s %-36s %-36s %s\n", c.Node, c.What, c.From, c.To, mark)
	}
	fmt.Fprintln(w)
}

// podRun runs argv in the pod's first container and returns stdout, or
// the error.
func (l *Lab) podRun(ctx context.Context, p corev1.Pod, argv ...string) string {
	var out, errb bytes.Buffer
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.Exec(cctx, ExecOptions{Target: p.Namespace + "/" + p.Name, Argv: argv, Stdout: &out, Stderr: &errb}); err != nil {
		return "error: " + strings.TrimSpace(errb.String())
	}
	return strings.TrimSpace(out.String())
}

func (l *Lab) podCurl(ctx context.Context, p corev1.Pod, container, url string) string {
	var out, errb bytes.Buffer
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := l.Exec(cctx, ExecOptions{Target: p.Namespace + "/" + p.Name, Container: container,
		Argv: []string{"curl", "-sS", "-m", "5", url}, Stdout: &out, Stderr: &errb})
	if err != nil {
		return "error: " + strings.TrimSpace(errb.String())
	}
	return strings.TrimSpace(out.String())
}

// DemoDeployment is a test-server Deployment with a sidecar, spread over
// nodes, with a readiness probe.
func DemoDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
						NodeTaintsPolicy: ptr.To(corev1.NodeInclusionPolicyHonor)}},
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{
						{Name: "server", Image: "weft/testserver", Args: []string{"--grpc-port=8082"},
							Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
							ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
								PeriodSeconds: 1}},
						{Name: "sidecar", Image: "busybox", Command: []string{"sh", "-c", "echo sidecar up; exec sleep infinity"}},
					},
				},
			},
		},
	}
}

// WaitPodsReady waits for n Ready pods matching selector and returns them.
func WaitPodsReady(ctx context.Context, client kubernetes.Interface, ns, selector string, n int, timeout time.Duration) ([]corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			var ready []corev1.Pod
			for _, p := range list.Items {
				if p.DeletionTimestamp == nil && PodReady(&p) {
					ready = append(ready, p)
				}
			}
			if len(ready) >= n {
				return ready, nil
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%d of %d pods Ready in %s after %s", len(ready), n, ns, timeout)
			}
		} else if time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// PodReady reports the pod's Ready condition.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
