package shmcast

const sysMembarrier = 324 // not in package syscall for this architecture
