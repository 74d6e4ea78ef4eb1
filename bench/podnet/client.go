package main

import "k8s.io/client-go/kubernetes"

type kubernetesClient = kubernetes.Interface
