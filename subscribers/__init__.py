"""Fabric subscribers that run as their own processes: the Prusa Connect uploader, the tracker."""
