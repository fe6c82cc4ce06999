package kuryrnet

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
)

// NewInformer returns an informer over the KuryrNetworks of namespace ("" for all) whose store and
// event handlers get *KuryrNetwork (decoded once, when stored), with the usual
// DeletedFinalStateUnknown tombstones on deletes that were missed. tweak, when set, adjusts the
// list and watch options (e.g. a label selector).
func NewInformer(dyn dynamic.Interface, namespace string, resync time.Duration, tweak func(*metav1.ListOptions)) cache.SharedIndexInformer {
	ri := dyn.Resource(GVR).Namespace(namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			if tweak != nil {
				tweak(&o)
			}
			return ri.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			if tweak != nil {
				tweak(&o)
			}
			return ri.Watch(ctx, o)
		},
	}
	// The reflector checks watch events against the example object's type, which is what the
	// dynamic client returns; the transform turns them into typed objects before they are stored.
	example := &unstructured.Unstructured{}
	example.SetGroupVersionKind(GVK)
	// The wrapper lets the reflector know whether dyn can stream the initial list (WatchList):
	// the real client can, the fake of unit tests cannot.
	inf := cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, dyn), example, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	_ = inf.SetTransform(transform) // cannot fail before Run
	return inf
}

// transform decodes an unstructured KuryrNetwork; it is idempotent, as client-go requires.
func transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *KuryrNetwork:
		return o, nil
	case *unstructured.Unstructured:
		return FromUnstructured(o)
	}
	return nil, fmt.Errorf("KuryrNetwork informer: unexpected object %T", obj)
}

// Lister reads KuryrNetworks from an informer's store. The objects are shared with the cache:
// DeepCopy before changing one.
type Lister struct{ indexer cache.Indexer }

// NewLister reads the store of an informer made by NewInformer.
func NewLister(inf cache.SharedIndexInformer) Lister { return Lister{indexer: inf.GetIndexer()} }

// Get returns namespace/name, or an error for which apierrors.IsNotFound is true.
func (l Lister) Get(namespace, name string) (*KuryrNetwork, error) {
	obj, ok, err := l.indexer.GetByKey(namespace + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(GVR.GroupResource(), name)
	}
	k, ok := obj.(*KuryrNetwork)
	if !ok {
		return nil, fmt.Errorf("KuryrNetwork store holds a %T", obj)
	}
	return k, nil
}

// List returns every stored KuryrNetwork.
func (l Lister) List() []*KuryrNetwork {
	objs := l.indexer.List()
	out := make([]*KuryrNetwork, 0, len(objs))
	for _, o := range objs {
		if k, ok := o.(*KuryrNetwork); ok {
			out = append(out, k)
		}
	}
	return out
}

// FromObject returns the KuryrNetwork of an informer event, unwrapping a tombstone.
func FromObject(obj any) (*KuryrNetwork, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	k, ok := obj.(*KuryrNetwork)
	return k, ok
}
