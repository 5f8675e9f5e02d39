// The service registry istiod builds from Kubernetes objects, built from the
// Services, EndpointSlices and Pods in the config directory.
//
// Each Service becomes a service as istiod converts it
// (pilot/pkg/serviceregistry/kube), expressed as the ServiceEntry the rest of
// Sluice already routes with (`fromKubernetes` set):
// - host `name.namespace.svc.cluster.local`, MESH_INTERNAL;
// - VIPs: its IPv4 cluster IPs (what eBPF capture matches); a headless
//   Service (clusterIP None) has none and is reached by name;
// - each port's protocol from `appProtocol`, else the port name's prefix
//   (`http-`, `grpc-`, `tcp-`...), else TCP on the ports istiod never sniffs
//   (25, 53, 3306, 27017), else unset (Sluice treats it as HTTP);
//   UDP and SCTP ports are left out (Sluice proxies TCP only);
// - a selector also selects the WorkloadEntries of its namespace;
// - endpoints: the addresses of every EndpointSlice labelled
//   `kubernetes.io/service-name: <name>` in its namespace, ready ones only
//   (all of them with publishNotReadyAddresses), each port's number from the
//   slice port of the same name (a port its slice lacks gets no endpoint),
//   labels from the Pod its targetRef names; an address in two slices is one
//   endpoint with the ports of both.
//   As in istiod, an endpoint whose Pod is not known yet is left out until it
//   is (its labels would decide its subsets);
// - an ExternalName Service: a MESH_EXTERNAL DNS service whose one endpoint
//   is the external name (Sluice resolves no DNS names: it reports that);
// - exportTo from the `networking.istio.io/exportTo` annotation.
#pragma once

#include <string>
#include <vector>

#include "config/model.h"

namespace sluice::config {

// One ServiceEntry per Service in `r.kubeServices`, in their order.
// Anything left out or not understood is said once in `warnings`.
std::vector<ServiceEntry> kubernetesServices(const Resources& r, std::vector<std::string>& warnings);

// Istio's protocol for a Kubernetes Service port ("" when istiod would
// sniff it), from the port's protocol, appProtocol, name and number.
std::string kubernetesPortProtocol(const KubeServicePort& p);

}  // namespace sluice::config
