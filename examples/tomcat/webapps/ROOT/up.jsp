<%@ page contentType="text/plain" %>up
