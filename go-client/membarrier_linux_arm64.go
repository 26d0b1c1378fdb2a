package shmcast

const sysMembarrier = 283 // not in package syscall for this architecture
