module github.com/shmcast/shmcast/go-client

go 1.26
