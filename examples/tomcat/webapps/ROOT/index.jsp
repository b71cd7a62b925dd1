<%@ page contentType="text/plain" %><%--
  A stand-in for a Spring Boot app: Spring Boot binds SPRING_DATASOURCE_URL
  to spring.datasource.url, and so on, from the environment. It shows the
  URL and the user, never the password (only whether it is set).
--%>pid <%= ProcessHandle.current().pid() %>: url=<%= System.getenv("SPRING_DATASOURCE_URL") %> user=<%= System.getenv("SPRING_DATASOURCE_USERNAME") %> password <%= System.getenv("SPRING_DATASOURCE_PASSWORD") == null ? "unset" : "set" %>
