"""TodoMVC on syncline: the smallest complete application (``syncline demo todomvc``)."""
