package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// NamedWatch keeps one informer per object an Ingress names (a Secret for
// TLS, a ConfigMap for custom headers), each with a field selector on its
// name, so the controller never lists or caches any other object of the
// kind.
type NamedWatch struct {
	client   rest.Interface
	resource string
	newObj   func() runtime.Object
	changed  func()
	mu       sync.Mutex
	watches  map[string]*oneObject
}

type oneObject struct {
	store cache.Store
	stop  chan struct{}
}

func NewNamedWatch(client rest.Interface, resource string, newObj func() runtime.Object, changed func()) *NamedWatch {
	return &NamedWatch{client: client, resource: resource, newObj: newObj, changed: changed, watches: map[string]*oneObject{}}
}

// Want starts watches for newly named objects ("namespace/name") and
// stops the rest.
func (s *NamedWatch) Want(keys []string) {
	keep := map[string]bool{}
	var started []cache.InformerSynced
	s.mu.Lock()
	defer s.mu.Unlock()
	// A new object is loaded before the sync that named it goes on, so
	// its hosts do not get the default certificate (or no headers) for a
	// moment.
	defer func() {
		stop := make(chan struct{})
		t := time.AfterFunc(5*time.Second, func() { close(stop) })
		cache.WaitForCacheSync(stop, started...)
		t.Stop()
	}()
	for _, key := range keys {
		keep[key] = true
		if s.watches[key] != nil {
			continue
		}
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		lw := cache.NewListWatchFromClient(s.client, s.resource, ns, fields.OneTermEqualSelector("metadata.name", name))
		store, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: s.newObj(),
			Handler: cache.ResourceEventHandlerFuncs{AddFunc: func(any) { s.changed() }, UpdateFunc: func(any, any) { s.changed() },
				DeleteFunc: func(any) { s.changed() }}})
		w := &oneObject{store: store, stop: make(chan struct{})}
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

// Get returns the named object, nil when it is not (yet) there.
func (s *NamedWatch) Get(ns, name string) any {
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
	return o
}

func (s *NamedWatch) Stop() { s.Want(nil) }
