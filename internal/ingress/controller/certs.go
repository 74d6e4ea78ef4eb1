package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/ingress/route"
)

var metav1UpdateOptions = metav1.UpdateOptions{}

// Certs picks a TLS certificate by SNI: the host's own, a wildcard's,
// else the default (self-signed, made at start, as ingress-nginx's fake
// certificate).
type Certs struct {
	byHost atomic.Pointer[map[string]*tls.Certificate]
	dflt   *tls.Certificate
}

// NewCerts makes the store with a fresh default certificate.
func NewCerts() (*Certs, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "weft ingress default certificate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0), DNSNames: []string{"weft-ingress.invalid"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	c := &Certs{dflt: &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
	c.Set(nil)
	return c, nil
}

// Set replaces every host's certificate at once.
func (c *Certs) Set(byHost map[string]*tls.Certificate) {
	m := map[string]*tls.Certificate{}
	for h, cert := range byHost {
		m[strings.ToLower(h)] = cert
	}
	c.byHost.Store(&m)
}

// Get is a tls.Config's GetCertificate.
func (c *Certs) Get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	m := *c.byHost.Load()
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if cert := m[name]; cert != nil {
		return cert, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if cert := m["*"+name[i:]]; cert != nil {
			return cert, nil
		}
	}
	return c.dflt, nil
}

// secretWatch keeps one informer per Secret an Ingress names (a field
// selector on its name), so the controller never lists or caches any
// other Secret.
type secretWatch struct {
	client  kubernetes.Interface
	changed func()
	mu      sync.Mutex
	watches map[string]*oneSecret
}

type oneSecret struct {
	store cache.Store
	stop  chan struct{}
}

func newSecretWatch(client kubernetes.Interface, changed func()) *secretWatch {
	return &secretWatch{client: client, changed: changed, watches: map[string]*oneSecret{}}
}

// want starts watches for newly named Secrets and stops the rest.
func (s *secretWatch) want(refs []route.TLS) {
	keep := map[string]bool{}
	var started []cache.InformerSynced
	s.mu.Lock()
	defer s.mu.Unlock()
	// A new Secret is loaded before the sync that named it goes on, so
	// its hosts do not get the default certificate for a moment.
	defer func() {
		stop := make(chan struct{})
		t := time.AfterFunc(5*time.Second, func() { close(stop) })
		cache.WaitForCacheSync(stop, started...)
		t.Stop()
	}()
	for _, r := range refs {
		key := r.Namespace + "/" + r.Name
		keep[key] = true
		if s.watches[key] != nil {
			continue
		}
		lw := cache.NewListWatchFromClient(s.client.CoreV1().RESTClient(), "secrets", r.Namespace, fields.OneTermEqualSelector("metadata.name", r.Name))
		store, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: &corev1.Secret{},
			Handler: cache.ResourceEventHandlerFuncs{AddFunc: func(any) { s.changed() }, UpdateFunc: func(any, any) { s.changed() },
				DeleteFunc: func(any) { s.changed() }}})
		w := &oneSecret{store: store, stop: make(chan struct{})}
		s.watches[key] = w
		go ctrl.Run(w.stop)
		started = append(started, ctrl.HasSynced)
	}
	for key, w := range s.watches {
		if !keep[key] {
			close(w.stop)
			delete(s.watches, key)
		}
	}
}

func (s *secretWatch) get(ns, name string) *corev1.Secret {
	s.mu.Lock()
	w := s.watches[ns+"/"+name]
	s.mu.Unlock()
	if w == nil {
		return nil
	}
	o, ok, _ := w.store.GetByKey(ns + "/" + name)
	if !ok {
		return nil
	}
	return o.(*corev1.Secret)
}

func (s *secretWatch) stop() { s.want(nil) }
