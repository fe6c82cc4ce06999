package kuryrnet

// Pre-population protocol (documented in docs/controller.md):
//   - The controller sets status.populated = true once the namespace's network and subnet exist
//     (and the router interface, when [namespace_subnet] pod_router is set), when the population
//     handler is enabled ([kubernetes] enabled_handlers has namespace, kuryrnetwork and
//     kuryrnetwork_population). It never sets it back to false while the object lives.
//   - Every agent watches KuryrNetworks. For one whose Populate is true it fills its own pool for
//     (node, spec.projectId, status.netId) with PopulateCount ports, but only when that pool holds
//     no port at all once the agent has loaded its ports from Neutron. A restarted agent finds its
//     earlier ports in Neutron and does not populate twice; a node that joins later has an empty
//     pool and gets its share.
//   - When the KuryrNetwork has a deletionTimestamp, agents drop their pools for status.netId; the
//     controller deletes the ports, the subnet and the network, then removes the finalizer.

// Populate reports whether agents should pre-populate their pools for this KuryrNetwork.
func (k *KuryrNetwork) Populate() bool {
	return k.Ready() && k.Status.Populated
}

// PopulateCount is how many ports an agent creates in its empty pool for a new namespace subnet:
// int(max(ports_pool_batch/2, ports_pool_min)), kuryr's KuryrNetworkPopulationHandler (half a batch
// so that big clusters do not create a full batch per node, but at least the pool minimum).
func PopulateCount(batch, minimum int) int {
	return int(max(float64(batch)/2, float64(minimum)))
}

// ExcludedNamespaces get no KuryrNetwork: the control plane's own namespaces. The agents give
// their pods the [neutron_defaults] pod_subnet network, when there is one.
var ExcludedNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}
