package nginx

import (
	"bytes"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestMigrateReportsEachAnnotation(t *testing.T) {
	ings := []*networkingv1.Ingress{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "shop", Annotations: map[string]string{
			Prefix + "app-root": "/shop", Prefix + "configuration-snippet": "more_set_headers x;", Prefix + "backend-protocol": "GRPC"}},
			Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("nginx"), TLS: []networkingv1.IngressTLS{{SecretName: "s"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "plain"}},
	}
	reports := Migrate(ings)
	if len(reports) != 1 || reports[0].Ingress != "b/shop" || len(reports[0].Findings) != 4 {
		t.Fatalf("reports %+v", reports)
	}
	var buf bytes.Buffer
	WriteText(&buf, reports)
	out := buf.String()
	for _, want := range []string{`app-root="/shop": honoured`, `configuration-snippet="more_set_headers x;": ignored: snippets`,
		`backend-protocol="GRPC": honoured differently`, `ssl-redirect="(unset)": honoured differently`} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
