"""A real Apache Kafka cluster the project starts itself: KRaft nodes as separate JVM processes.

* :mod:`.jars`: fetch the pinned Kafka jars with Maven (``infra/kafka/pom.xml``) into a cache;
* :mod:`.config`: ``server.properties`` and JVM options of one node;
* :mod:`.node` / :mod:`.cluster`: format storage, start, stop, kill -9, wait until healthy;
* :mod:`.netns`: nodes in their own network namespaces, so one can be cut off (a partition);
* :mod:`.faults`: the faults the tests and ``ridehail bench outage --broker kafka`` inject;
* :mod:`.commands`: ``ridehail kafka up|status|fetch``; :mod:`.stack`: the cluster under ``ridehail up``.
"""
