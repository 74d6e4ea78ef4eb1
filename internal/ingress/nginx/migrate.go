package nginx

import (
	"fmt"
	"io"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"
)

// IngressReport is what weft would do with one Ingress's annotations.
type IngressReport struct {
	Ingress  string    `json:"ingress"` // namespace/name
	Class    string    `json:"class"`
	Findings []Finding `json:"findings"`
}

// Migrate reports, per Ingress that carries ingress-nginx annotations or
// TLS, each annotation's verdict; TLS without an ssl-redirect annotation
// gets a finding too, since ingress-nginx redirects such hosts to HTTPS by
// default and weft only when asked.
func Migrate(ings []*networkingv1.Ingress) []IngressReport {
	var out []IngressReport
	for _, ing := range ings {
		_, findings := Parse(ing.Annotations, false)
		_, explicit := ing.Annotations[Prefix+"ssl-redirect"]
		if len(ing.Spec.TLS) > 0 && !explicit {
			findings = append(findings, Finding{Annotation: Prefix + "ssl-redirect", Value: "(unset)", Verdict: Differently,
				Why: "ingress-nginx redirects plain HTTP to HTTPS for TLS hosts by default; weft does when the annotation is set to true"})
		}
		if len(findings) == 0 {
			continue
		}
		class := ""
		if ing.Spec.IngressClassName != nil {
			class = *ing.Spec.IngressClassName
		}
		out = append(out, IngressReport{Ingress: ing.Namespace + "/" + ing.Name, Class: class, Findings: findings})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ingress < out[j].Ingress })
	return out
}

// WriteText prints reports for people: one block per Ingress.
func WriteText(w io.Writer, reports []IngressReport) {
	if len(reports) == 0 {
		fmt.Fprintln(w, "no Ingress carries ingress-nginx annotations or TLS")
		return
	}
	for _, r := range reports {
		fmt.Fprintf(w, "%s (class %q)\n", r.Ingress, r.Class)
		for _, f := range r.Findings {
			line := fmt.Sprintf("  %s=%q: %s", f.Annotation, f.Value, f.Verdict)
			if f.Why != "" {
				line += ": " + f.Why
			}
			fmt.Fprintln(w, line)
		}
	}
}
