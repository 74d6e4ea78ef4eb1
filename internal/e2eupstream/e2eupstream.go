// Package e2eupstream classifies the upstream Kubernetes [sig-network] e2e
// specs run against the lab: which we skip (and why), which passed, which
// failed (and which issue owns the failure). It reads Ginkgo's JUnit report
// and renders docs/e2e.md, so the page is produced by a command, never by hand.
package e2eupstream

import (
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// Rule matches spec names by a regular expression and says why.
type Rule struct {
	Pattern string
	Reason  string
}

// SkipRules are the specs `make e2e-upstream` does not run by default.
// Each names what the lab or weft lacks, so the list shrinks as work lands.
var SkipRules = []Rule{
	{`\[Feature:IPv6DualStack\]`, "needs a dual-stack cluster: run in a second pass against `weft lab up --dual-stack` (DUAL_STACK=1; make e2e-doc and make test do)"},
	{`\[Feature:Networking-IPv6\]`, "needs an IPv6-primary cluster; the lab is IPv4 or dual-stack with IPv4 first"},
	{`\[Feature:SCTPConnectivity\]`, "this machine's kernel offers no SCTP sockets (SCTP policy rules are checked by the packet tracer and load into the kernel)"},
	{`should be able to switch session affinity for LoadBalancer service with Local traffic policy`, "needs a load balancer that applies the Service's sessionAffinity itself (a cloud's): with BGP, routers spread a LoadBalancer address over nodes by a hash of the flow and know nothing of affinity; with externalTrafficPolicy Local and one endpoint per node, one client reaches one node, so turning affinity off cannot spread its connections over the endpoints (hashing per connection instead breaks the spec that checks affinity holds)"},
	{`\[Feature:LoadBalancer\]`, "run in a pass of their own: a lab with backend bgp (LoadBalancer addresses announced to the rack router) and the suite in the outside namespace, a client outside the cluster's networks (BACKEND=bgp FROM=outside; make e2e-doc does)"},
	{`\[Disruptive\]`, "reboots or partitions nodes through a cloud provider or SSH"},
	{`\[Feature:PerformanceDNS\]|\[Feature:Networking-Performance\]`, "scale/performance runs, not correctness; weft's own `make bench` covers speed"},
	{`\[sig-network\] DNS configMap`, "configures kube-dns/CoreDNS through their kube-system ConfigMaps; weft dns is configured by flags"},
	{`\[Provider:`, "cloud-provider specific"},
	{`\[Feature:Networking-IPv4\]|\[Feature:Networking-DNS\]`, "needs the Internet (google.com); the lab has no route out by design"},
	{`\[FeatureGate:`, "a feature gate the lab's control plane does not enable"},
	{`\[Feature:LocalhostNodePorts\]`, "NodePorts on 127.0.0.1 are kube-proxy iptables-mode behaviour; its nftables mode and weft do not serve NodePorts on loopback, by design"},
}

// OwnerRules say which issue owns a failing spec, first match wins.
var OwnerRules = []Rule{
	{`\[Feature:LoadBalancer\]`, "issue 16 (BGP: LoadBalancer addresses)"},
	// What the lab node (kubelet-lite) must do for the spec to run at all.
	{`restartable init containers|evicted pods|Readiness Gates|proxy logs on node|unready|terminating endpoints`, "issue 4 (lab fidelity)"},
	{`\[sig-network\] (Netpol|NetworkPolicy)`, "issue 13 (NetworkPolicy)"},
	{`\[sig-network\] HostPort`, "issue 3 (pod network: hostPort)"},
	{`\[sig-network\] DNS|dns`, "issue 6 (cluster DNS)"},
	{`kube-proxy urls|KubeProxy`, "issue 5 (service proxy)"},
	{`\[sig-network\] (Services|Conntrack|KubeProxy|Service |ServiceCIDR|LocalhostNodePorts|Traffic|Topology|HostPort|NoSNAT)|[Ss]ervice`, "issue 5 (service proxy)"},
	{`\[sig-network\] (Networking|Connectivity)`, "issue 3 (pod network)"},
	{`.`, "issue 4 (lab fidelity)"},
}

// SkipRegex is the Ginkgo --skip expression for SkipRules.
func SkipRegex() string {
	parts := make([]string, len(SkipRules))
	for i, r := range SkipRules {
		parts[i] = r.Pattern
	}
	return strings.Join(parts, "|")
}

func firstMatch(rules []Rule, name string) (Rule, bool) {
	for _, r := range rules {
		if regexp.MustCompile(r.Pattern).MatchString(name) {
			return r, true
		}
	}
	return Rule{}, false
}

// Class is the outcome of one spec.
type Class string

const (
	Pass    Class = "pass"
	Fail    Class = "fail"
	Skipped Class = "skipped"
	NotRun  Class = "not run" // outside the run's focus, or the run stopped early
)

// Spec is one [sig-network] spec and its outcome.
type Spec struct {
	Name    string
	Class   Class
	Why     string  // skip reason, or the failure's first line
	Owner   string  // for failures
	Seconds float64 // run time
}

type junitSuites struct {
	Suites []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Cases []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name    string        `xml:"name,attr"`
	Status  string        `xml:"status,attr"`
	Time    float64       `xml:"time,attr"`
	Failure *junitMessage `xml:"failure"`
	Error   *junitMessage `xml:"error"`
	Skipped *junitMessage `xml:"skipped"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// labelSuffix is the label list Ginkgo appends to JUnit names, e.g.
// " [sig-network, Conformance]"; the spec's own text precedes it.
var labelSuffix = regexp.MustCompile(` \[[^\[\]]*(, [^\[\]]*)+\]$| \[sig-[a-z-]+\]$`)

// SpecName turns a JUnit test case name into the spec text.
func SpecName(junitName string) string {
	name := strings.TrimPrefix(junitName, "[It] ")
	return labelSuffix.ReplaceAllString(name, "")
}

// Classify reads a Ginkgo JUnit report and returns the [sig-network] specs,
// sorted by name. A skipped spec that matches a SkipRule gets that rule's
// reason; one skipped for another reason (outside the focus) is NotRun.
func Classify(junit io.Reader) ([]Spec, error) {
	var doc junitSuites
	if err := xml.NewDecoder(junit).Decode(&doc); err != nil {
		return nil, fmt.Errorf("reading JUnit report: %w", err)
	}
	var specs []Spec
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			if !strings.HasPrefix(c.Name, "[It] [sig-network]") {
				continue
			}
			sp := Spec{Name: SpecName(c.Name), Seconds: c.Time}
			switch c.Status {
			case "passed":
				sp.Class = Pass
			case "failed", "panicked", "interrupted", "timedout", "aborted":
				sp.Class = Fail
				msg := c.Failure
				if msg == nil {
					msg = c.Error
				}
				sp.Why = c.Status
				if msg != nil {
					sp.Why = firstLine(msg.Message, msg.Text)
				}
				r, _ := firstMatch(OwnerRules, sp.Name)
				sp.Owner = r.Reason
			default:
				if r, ok := firstMatch(SkipRules, sp.Name); ok {
					sp.Class, sp.Why = Skipped, r.Reason
				} else if msg := skipMessage(c.Skipped); msg != "" {
					// The spec ran and skipped itself (e2eskipper).
					sp.Class, sp.Why = Skipped, "skipped by the spec: "+msg
				} else {
					sp.Class = NotRun
				}
			}
			specs = append(specs, sp)
		}
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
	return specs, nil
}

// classRank orders outcomes for Merge: a spec that ran in any pass counts
// as run, a failure in any pass as failed.
var classRank = map[Class]int{NotRun: 0, Skipped: 1, Pass: 2, Fail: 3}

// Merge combines the specs of several passes (each run against its own
// lab, with its own focus) into one list: per spec, the outcome that says
// most (fail over pass over skipped over not run).
func Merge(passes ...[]Spec) []Spec {
	best := map[string]Spec{}
	for _, specs := range passes {
		for _, s := range specs {
			if cur, ok := best[s.Name]; !ok || classRank[s.Class] > classRank[cur.Class] {
				best[s.Name] = s
			}
		}
	}
	out := make([]Spec, 0, len(best))
	for _, s := range best {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// skipMessage is a spec's own skip reason; Ginkgo writes "skipped" alone
// for specs it never ran (outside focus, or --skip).
func skipMessage(m *junitMessage) string {
	if m == nil {
		return ""
	}
	msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(m.Message), "skipped"))
	return strings.TrimSpace(strings.TrimPrefix(msg, "-"))
}

func firstLine(texts ...string) string {
	for _, t := range texts {
		for _, l := range strings.Split(t, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				if len(l) > 200 {
					l = l[:200] + "…"
				}
				return l
			}
		}
	}
	return ""
}

// Counts tallies specs by class.
func Counts(specs []Spec) map[Class]int {
	n := map[Class]int{}
	for _, s := range specs {
		n[s.Class]++
	}
	return n
}

// WriteSummary prints counts and the failures, for a terminal.
func WriteSummary(w io.Writer, specs []Spec) {
	n := Counts(specs)
	fmt.Fprintf(w, "[sig-network] specs: %d pass, %d fail, %d skipped, %d not run\n", n[Pass], n[Fail], n[Skipped], n[NotRun])
	for _, s := range specs {
		if s.Class == Fail {
			fmt.Fprintf(w, "FAIL %s\n     %s\n", s.Name, s.Why)
		}
	}
}

// WriteDoc renders docs/e2e.md. command is what regenerates it; revision
// is the weft commit the run tested.
func WriteDoc(w io.Writer, specs []Spec, k8sVersion, command, revision string) {
	n := Counts(specs)
	fmt.Fprintf(w, "# Upstream e2e: every `[sig-network]` spec of Kubernetes %s against the lab\n\n", k8sVersion)
	fmt.Fprintf(w, "Generated by `%s` from a run against weft %s; do not edit by hand. How the suite is built and run: [lab.md](lab.md#upstream-e2e).\n\n", command, revision)
	fmt.Fprintf(w, "| class | specs |\n|---|---|\n| pass | %d |\n| fail | %d |\n| skipped | %d |\n| not run | %d |\n| total | %d |\n\n",
		n[Pass], n[Fail], n[Skipped], n[NotRun], len(specs))
	fmt.Fprintf(w, "Skipped specs are left out of the default run (`make e2e-upstream` without SKIP); the reason names what is missing. ")
	fmt.Fprintf(w, "Failures name the issue that owns them and the first line of the failure.\n\n")
	fmt.Fprintf(w, "| spec | class | why / owner |\n|---|---|---|\n")
	for _, s := range specs {
		why := s.Why
		if s.Class == Fail {
			why = s.Owner + ": " + s.Why
		}
		if s.Class == Pass {
			why = fmt.Sprintf("%.0f s", s.Seconds)
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", mdEscape(s.Name), s.Class, mdEscape(why))
	}
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "`", "'").Replace(s)
}
