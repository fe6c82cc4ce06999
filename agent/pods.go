package agent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// PodCache is an informer on the pods of this node (field selector spec.nodeName). It answers from
// memory: the ADD path never waits for the API server.
type PodCache struct {
	factory informers.SharedInformerFactory
	lister  listerscorev1.PodLister
	synced  cache.InformerSynced
}

// NewPodCache watches the pods scheduled on node.
func NewPodCache(client kubernetes.Interface, node string) *PodCache {
	f := informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	inf := f.Core().V1().Pods()
	return &PodCache{factory: f, lister: inf.Lister(), synced: inf.Informer().HasSynced}
}

// Start runs the informer; WaitForSync waits for its first list.
func (c *PodCache) Start(ctx context.Context) { c.factory.Start(ctx.Done()) }

// WaitForSync waits until the cache holds the node's pods, or ctx is done.
func (c *PodCache) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return fmt.Errorf("pods of this node: informer did not sync: %w", ctx.Err())
	}
	return nil
}

// Pod returns the pod from the cache.
func (c *PodCache) Pod(namespace, name string) (*corev1.Pod, bool) {
	p, err := c.lister.Pods(namespace).Get(name)
	return p, err == nil
}

// Complete fills what CNI_ARGS did not say (the pod UID) from the cache.
func (c *PodCache) Complete(ref PodRef) PodRef {
	if ref.UID == "" {
		if p, ok := c.Pod(ref.Namespace, ref.Name); ok {
			ref.UID = string(p.UID)
		}
	}
	return ref
}
